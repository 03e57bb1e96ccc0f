"""`minires gradients`: the main job. Plain vs residual gradient norms at initialisation.

    minires gradients --depths 20 56 110 --bn --device cpu --out runs/gradients

writes layer_gradients.png (per-layer ||dL/d input||, plain vs residual, log scale),
residual_split.png (the "+1" per block), layers.csv and blocks.csv (every number), and prints the
ratio of the gradient norm at the first block's input to the last block's input for each net.
"""
import os

from tqdm import tqdm


def add_arguments(parser):
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110],
                        help="CIFAR depths, 6n+2 (default: 20 56 110)")
    parser.add_argument("--bn", dest="batch_norm", action="store_true", default=True,
                        help="with batch norm, He init (default)")
    parser.add_argument("--no-bn", dest="batch_norm", action="store_false",
                        help="without batch norm, PyTorch's default conv init")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("synthetic", "cifar10", "auto"), default="auto",
                        help="auto: CIFAR-10 if already on disk, else synthetic (default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--out", default="runs/gradients", help="output directory")


def run(args):
    from . import compare, plot_layer_gradients, plot_residual_split, summary_lines, write_csv
    from ..models import cifar_block_count

    for depth in args.depths:
        cifar_block_count(depth)  # a clear error for a depth outside 6n+2, before any work
    os.makedirs(args.out, exist_ok=True)
    with tqdm(total=2 * len(args.depths), desc="plain and residual nets", unit="net") as bar:
        results, source = compare(args.depths, args.batch_norm, args.batch_size, args.seed,
                                  args.device, args.data, progress=bar)
    setting = "with BN, He init" if args.batch_norm else "without BN, PyTorch default init"
    files = [
        plot_layer_gradients(results, os.path.join(args.out, "layer_gradients.png"),
                             f"||dL/d(layer input)|| at initialisation, {setting} ({source} batch)"),
        plot_residual_split(results, os.path.join(args.out, "residual_split.png")),
    ]
    layers_csv, blocks_csv = (os.path.join(args.out, name) for name in ("layers.csv", "blocks.csv"))
    write_csv(results, layers_csv, blocks_csv)
    print(f"Gradient norms at initialisation, {setting}, batch {args.batch_size} of {source} data:")
    print("\n".join(summary_lines(results)))
    print("wrote " + ", ".join(files + [layers_csv, blocks_csv]))
    return 0
