"""The student edition: every exercise's solution removed from the book.

With the configuration value `student_edition: true` (scripts/student_edition.py sets it), the
solutions are dropped from each page after sphinx-exercise has gathered a gated solution
(``solution-start`` … ``solution-end``) into one node, so that its text, its code cells and their
outputs go together. sphinx-exercise's own `hide_solutions` cannot do this: it drops only the
opening marker of a gated solution, which leaves the solution's content on the page and breaks the
build at the closing marker.
"""

from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node
from sphinx_exercise.transforms import MergeGatedSolutions


class RemoveSolutions(SphinxTransform):
    default_priority = MergeGatedSolutions.default_priority + 1

    def apply(self):
        if not self.config.student_edition:
            return
        for node in list(self.document.findall(solution_node)):
            node.parent.remove(node)


def setup(app):
    app.add_config_value("student_edition", False, "env")
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
