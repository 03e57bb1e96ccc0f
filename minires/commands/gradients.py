"""`minires gradients`: the main job. Plain vs residual gradient norms at initialisation.

    minires gradients --depths 20 56 110 --device cpu --out runs/gradients

runs every net twice, without batch norm (PyTorch's default init) and with it (He init), and writes
layer_gradients.png (per-layer ||dL/d input||, plain vs residual, log scale: the two settings side
by side, one row per depth), residual_split_bn.png and residual_split_no_bn.png (the "+1" per
block), layers.csv and blocks.csv (every number, with a batch_norm column), and prints the ratio of
the gradient norm at the first block's input to the last block's input for each net.
`--bn` or `--no-bn` runs only that setting. `--dtype float64` holds gradients that outgrow
float32 (a plain net's, with BN, at depth 1202, or without BN at 110); a net whose gradient left
its dtype's range says where.

Failures are one line "minires gradients: ..." (exit 1): a bad depth, device or seed, missing
data, and an output folder that cannot be written, which is checked before any net runs (the
folder itself is made only at the end). Ctrl-C is one line too (exit 130): nothing is written
before the nets have all run, and a Ctrl-C while the files are written waits until they are whole.
"""
import os

from tqdm import tqdm

from .common import StopRequest, check_can_create, count_at_least, interrupted, one_line

SETTINGS = {True: ("bn", "with BN, He init"), False: ("no_bn", "without BN, PyTorch default init")}


def add_arguments(parser):
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110],
                        help="CIFAR depths, 6n+2 (default: 20 56 110)")
    setting = parser.add_mutually_exclusive_group()
    setting.add_argument("--bn", dest="batch_norm", action="store_const", const=True,
                         help="only with batch norm, He init (default: both settings)")
    setting.add_argument("--no-bn", dest="batch_norm", action="store_const", const=False,
                         help="only without batch norm, PyTorch's default conv init "
                              "(default: both settings)")
    parser.add_argument("--batch-size", type=count_at_least(1), default=32)
    parser.add_argument("--seed", type=count_at_least(0), default=0)
    parser.add_argument("--data", choices=("synthetic", "cifar10", "auto"), default="auto",
                        help="auto: CIFAR-10 if already on disk, else synthetic (default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="float64 holds the gradients of very deep plain nets, which "
                             "overflow float32 (plain-1202 with BN does) (default: float32)")
    parser.add_argument("--out", default="runs/gradients", help="output directory")


def run(args):
    from .. import backend
    from ..data import DatasetNotFound
    from ..models import cifar_block_count

    try:  # a depth outside 6n+2, no GPU, an output folder that cannot be made: before any work
        for depth in args.depths:
            cifar_block_count(depth)
        if args.device is not None:
            backend.check_device(args.device)
        check_can_create(args.out)
    except (ValueError, RuntimeError, OSError) as err:
        raise SystemExit(one_line("gradients", err)) from None
    with StopRequest() as stop:  # a Ctrl-C stops between two nets (and waits for whole files)
        try:
            runs, source = _compare_both_settings(args, stop)
        except DatasetNotFound as err:  # --data cifar10 without it: one line, no output folder
            raise SystemExit(f"minires gradients: {err}") from None
        except KeyboardInterrupt:
            return interrupted("gradients", "nothing was written (the files are written once "
                                            "every net has run); run the command again")
        try:
            status = _plot_and_write(args, runs, source)
        except OSError as err:
            raise SystemExit(one_line("gradients", err)) from None
    if stop.requested:
        return interrupted("gradients", f"the files in {args.out} were all written first")
    return status


class _StopBetweenNets:
    """The progress bar that compare() updates after each net, raising KeyboardInterrupt there
    once a stop is requested (a net's backward pass is never cut in half)."""

    def __init__(self, bar, stop):
        self.bar, self.stop = bar, stop

    def update(self, n=1):
        self.bar.update(n)
        if self.stop():
            raise KeyboardInterrupt


def _compare_both_settings(args, stop):
    """({batch_norm: compare()'s results} for the settings asked for, the data's name)."""
    from ..inspect import compare

    settings = [False, True] if args.batch_norm is None else [args.batch_norm]
    runs = {}
    with tqdm(total=2 * len(args.depths) * len(settings), desc="plain and residual nets",
              unit="net") as bar:
        for batch_norm in settings:
            runs[batch_norm], source = compare(args.depths, batch_norm, args.batch_size,
                                               args.seed, args.device, args.data,
                                               progress=_StopBetweenNets(bar, stop),
                                               dtype=args.dtype)
    return runs, source


def _plot_and_write(args, runs, source):
    from ..inspect import plot_residual_split, summary_lines, write_csv
    from ..inspect.plots import plot_gradients_bn_vs_no_bn

    os.makedirs(args.out, exist_ok=True)
    settings = list(runs)
    path = lambda name: os.path.join(args.out, name)  # noqa: E731
    files = [plot_gradients_bn_vs_no_bn(runs, path("layer_gradients.png"), source)]
    files += [plot_residual_split(runs[bn], path(f"residual_split_{SETTINGS[bn][0]}.png"),
                                  f"{_sentence_case(SETTINGS[bn][1])}, {args.dtype}")
              for bn in settings]
    write_csv(runs, path("layers.csv"), path("blocks.csv"))
    for batch_norm in settings:
        print(f"Gradient norms at initialisation, {SETTINGS[batch_norm][1]}, batch "
              f"{args.batch_size} of {source} data:")
        print("\n".join(summary_lines(runs[batch_norm])))
    print("wrote " + ", ".join(files + [path("layers.csv"), path("blocks.csv")]))
    return 0


def _sentence_case(text):
    """'with BN, He init' -> 'With BN, He init': the first letter up, the rest as written
    (str.capitalize lowered the acronyms and names)."""
    return text[:1].upper() + text[1:]
