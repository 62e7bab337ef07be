"""Model wrappers shared by the evolution tests."""

import time


class Slow:
    """A model whose every pass sleeps ``delay`` seconds first (to overrun time budgets)."""

    def __init__(self, model, delay):
        self.model, self.delay = model, delay

    def __call__(self, x):
        time.sleep(self.delay)
        return self.model(x)

    def forward(self, x, train=False):
        time.sleep(self.delay)
        return self.model.forward(x, train=train)

    def layers(self):
        return self.model.layers()
