"""Model wrappers shared by the evolution tests."""

import time


class Slow:
    """A model whose every call sleeps ``delay`` seconds first (to overrun time budgets)."""

    def __init__(self, model, delay):
        self.model, self.delay = model, delay

    def __call__(self, x, train=False):
        time.sleep(self.delay)
        return self.model(x, train=train)

    def layers(self):
        return self.model.layers()
