"""Losses: values, finite-difference gradients, PyTorch agreement, stability and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_function

from tinyevo import backend as B
from tinyevo import losses
from tinyevo.losses import logit_cross_entropy, mse


def _logits(xp, shape=(5, 4), seed=0, dtype=np.float64):
    return xp.asarray(np.random.default_rng(seed).standard_normal(shape) * 2, dtype=dtype)


def test_cross_entropy_uniform_logits_is_log_k(xp):
    loss, grad = logit_cross_entropy(xp.zeros((3, 4), dtype=np.float32), xp.asarray([0, 1, 3]))
    assert abs(float(loss) - np.log(4)) < 1e-6
    assert getattr(loss, "ndim", 0) == 0, "the loss stays a 0-d array (no device sync)"
    np.testing.assert_allclose(B.to_numpy(grad).sum(axis=1), 0, atol=1e-7)


def test_cross_entropy_gradient_int_labels(xp):
    logits = _logits(xp)
    labels = xp.asarray([0, 3, 1, 1, 2])
    _, grad = logit_cross_entropy(logits.copy(), labels)
    check_function(lambda z: logit_cross_entropy(z, labels)[0], logits, grad)


def test_cross_entropy_gradient_one_hot_and_soft(xp):
    logits = _logits(xp)
    onehot = xp.asarray(np.eye(4)[[0, 3, 1, 1, 2]])
    _, grad = logit_cross_entropy(logits.copy(), onehot)
    check_function(lambda z: logit_cross_entropy(z, onehot)[0], logits, grad)
    soft = xp.asarray(np.random.default_rng(1).dirichlet(np.ones(4), 5))
    _, grad = logit_cross_entropy(logits.copy(), soft)
    check_function(lambda z: logit_cross_entropy(z, soft)[0], logits, grad)


def test_cross_entropy_int_and_one_hot_agree(xp):
    logits = _logits(xp, dtype=np.float32)
    labels = np.array([2, 0, 3, 3, 1])
    l1, g1 = logit_cross_entropy(logits, xp.asarray(labels))
    l2, g2 = logit_cross_entropy(logits, xp.asarray(np.eye(4, dtype=np.float32)[labels]))
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
    np.testing.assert_allclose(B.to_numpy(g1), B.to_numpy(g2), atol=1e-7)
    # The logits are not modified in place.
    np.testing.assert_array_equal(B.to_numpy(logits), B.to_numpy(_logits(xp, dtype=np.float32)))


def test_mse_gradient(xp):
    pred = _logits(xp, (4, 3))
    target = _logits(xp, (4, 3), seed=1)
    loss, grad = mse(pred, target)
    np.testing.assert_allclose(float(loss), ((B.to_numpy(pred - target)) ** 2).mean())
    check_function(lambda p: mse(p, target)[0], pred, grad)


def test_mse_column_target_broadcast_and_shape_errors(xp):
    pred = xp.asarray(np.arange(3.0).reshape(3, 1))
    loss, grad = mse(pred, xp.asarray([0.0, 1.0, 4.0]))
    assert float(loss) == pytest.approx(4.0 / 3)
    assert grad.shape == (3, 1)
    with pytest.raises(ValueError, match="shape"):
        mse(xp.zeros((3, 2)), xp.zeros((2, 3)))


def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits = np.random.default_rng(0).standard_normal((6, 5)) * 3
    labels = np.array([0, 4, 2, 2, 1, 3])
    loss, grad = logit_cross_entropy(logits.copy(), labels)
    t = torch.from_numpy(logits).requires_grad_(True)
    tl = F.cross_entropy(t, torch.from_numpy(labels))
    tl.backward()
    assert float(loss) == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-14)
    target = np.random.default_rng(1).standard_normal((6, 5))
    loss, grad = mse(logits, target)
    t = torch.from_numpy(logits).requires_grad_(True)
    tl = F.mse_loss(t, torch.from_numpy(target))
    tl.backward()
    assert float(loss) == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits(xp):
    logits = xp.asarray([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], dtype=np.float32)
    loss, grad = logit_cross_entropy(logits, xp.asarray([1, 0]))
    assert np.isfinite(float(loss))
    assert float(loss) == pytest.approx((2e4 + 6e4 + np.log(2)) / 2, rel=1e-5)
    assert np.isfinite(B.to_numpy(grad)).all()
    assert grad.dtype == np.float32


def test_losses_keep_float32(xp):
    logits = _logits(xp, dtype=np.float32)
    for labels in (xp.asarray([0, 1, 2, 3, 0]), xp.asarray(np.eye(4)[[0, 1, 2, 3, 0]])):
        loss, grad = logit_cross_entropy(logits, labels)
        assert grad.dtype == np.float32 and loss.dtype == np.float32
    loss, grad = mse(logits, xp.zeros((5, 4)))
    assert grad.dtype == np.float32 and loss.dtype == np.float32


def test_non_finite_logits_do_not_crash(xp):
    logits = _logits(xp, dtype=np.float32)
    logits[0, 1] = np.nan
    logits[1, 2] = np.inf
    with np.errstate(all="ignore"):
        loss, grad = logit_cross_entropy(logits, xp.asarray([0, 1, 2, 3, 0]))
        assert grad.shape == logits.shape
        assert not np.isfinite(float(loss))
        np.testing.assert_array_equal(np.isfinite(B.to_numpy(grad))[2:], True)


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 1, 2]), "labels"),                       # wrong count
    (np.array([0.0, 1.0, 2.0, 0.0, 1.0]), "integer"),       # float class indices
    (np.array([0, 1, 4, 0, 1]), r"\[0, 4\)"),               # out of range
    (np.array([0, -1, 2, 0, 1]), r"\[0, 4\)"),
    (np.zeros((5, 3)), "one-hot"),                          # wrong width
])
def test_cross_entropy_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        logit_cross_entropy(np.zeros((5, 4), np.float32), labels)


def test_cross_entropy_bad_logits_rank():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        logit_cross_entropy(np.zeros(4, np.float32), np.array([1]))


def test_get_by_name():
    assert losses.get("mse") is mse
    assert losses.get("logit_cross_entropy") is logit_cross_entropy
    assert losses.get(mse) is mse
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge")
