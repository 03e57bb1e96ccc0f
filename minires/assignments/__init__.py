"""Classroom assignments: student workspaces with the solutions removed, and their autograder.

    minires assignment list
    minires assignment make conv --out hw1      # hw1/conv.py with TODO stubs, README.md
    minires assignment grade hw1 --json results.json

The reference solutions are minires' own ops: in minires/ops, each solution body sits between
`# BEGIN SOLUTION` and `# END SOLUTION` comment lines. `make` copies the op files an assignment
needs, turns those bodies into TODO stubs and makes the imports absolute, so the student's classes
subclass minires.autograd.Function and run on the real engine. `grade` runs each part in its own
process, against the reference ops and numerical gradients, on fresh random inputs.

Assignments: 1 conv (im2col, col2im, conv2d), 2 batchnorm (train and eval), 3 residual (ReLU, the
residual add, a BasicBlock on them, then plain vs residual gradient norms on the student's ops).
"""
from .grader import grade, gradescope_results
from .registry import all_assignments, get
from .student import load_workspace, student_ops
from .workspace import make_workspace

__all__ = ["all_assignments", "get", "make_workspace", "grade", "gradescope_results",
           "load_workspace", "student_ops"]
