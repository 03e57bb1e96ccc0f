"""Classroom assignments: student workspaces with the solutions removed, and their autograder.

    minires assignment list
    minires assignment release --assign conv --out student-minires  # a working copy, conv blank
    minires assignment check conv                     # in the copy: public checks, no reference
    minires assignment submit conv --out hw1          # in the copy: hw1/conv.py for the grader
    minires assignment make conv --out hw1            # hw1/conv.py with TODO stubs, README.md
    minires assignment grade hw1 --assignment conv --json results.json
    minires assignment gradescope conv --out conv.zip # Gradescope's autograder bundle

The reference solutions are minires' own code: each solution body sits between `# BEGIN SOLUTION`
and `# END SOLUTION` comment lines (minires/autograd.py, minires/ops, assignments/block.py).
`make` copies the files an assignment needs, turns those bodies into TODO stubs and makes the
imports absolute, so the student's classes run on the real engine. `grade` runs each part in a
sandboxed fresh interpreter on a minires with no solution in it (stripped.py) and compares the
plain arrays it returns with the reference, in its own process (grader.py says how, isolation.py
what keeps the student's code contained).

Assignments: 0 engine (the topological order and gradient accumulation of backward), 1 conv
(im2col, col2im, conv2d), 2 batchnorm (train and eval), 3 residual (ReLU, the residual add, the
option-A shortcut's backward, a BasicBlock's backward by hand and its "+1" split, then plain vs
residual gradient norms on the student's ops).
"""
from .grader import grade, gradescope_results
from .registry import all_assignments, get
from .student import load_workspace, student_ops
from .workspace import make_workspace

__all__ = ["all_assignments", "get", "make_workspace", "grade", "gradescope_results",
           "load_workspace", "student_ops"]
