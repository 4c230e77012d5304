"""pytest configuration for replaying the chapters with nbval.

nbval executes every cell with store_history=False. IPython decides whether a trailing `;`
silences a cell's result by looking at the input history, so under nbval `plt.plot(...);`
would print its return value although Jupyter (and the golden notebook) does not. Replay the
cells with history, exactly as Jupyter runs them.
"""

from nbval.kernel import RunningKernel


def _execute_with_history(self, cell_input, allow_stdin=None):
    return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)


RunningKernel.execute_cell_input = _execute_with_history
