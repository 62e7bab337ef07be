"""Model wrappers shared by the evolution tests, and a summary of a run to compare runs by."""

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


def fit_summary(population):
    """Every member's fitness and vertex names: equal for runs that went the same way."""
    return ([c.fitness for c in population],
            [[v.name for v in c.graph().vertices] for c in population])
