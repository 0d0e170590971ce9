"""The MoE dispatch implementations agree with each other, values and gradients, and drop nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rise_jax.models import dispatch
from rise_jax.models.dispatch import ExpertChoice
from rise_jax.models.expert_weights import StackedExperts, StackLayerExperts, SubstitutedExperts
from rise_jax.models.quantized import QuantizedArray, quantize


def _problem(n=37, h=16, i=8, e=6, k=2, skew=False, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, h).astype(np.float32)
    wg, wu = (rng.randn(e, h, i).astype(np.float32) * 0.3 for _ in range(2))
    wd = rng.randn(e, i, h).astype(np.float32) * 0.3
    if skew:  # every token routes to expert 0 and one other: one group holds n rows
        idx = np.stack([np.zeros(n, np.int64), rng.randint(1, e, n)], -1)
    else:
        idx = np.argsort(rng.rand(n, e), -1)[:, :k]
    w = rng.rand(n, k).astype(np.float32)
    return tuple(map(jnp.asarray, (x, wg, wu, wd, idx.astype(np.int32), w)))


@pytest.mark.parametrize("impl", ["ragged", "grouped_scan", "blocked"])
@pytest.mark.parametrize("skew", [False, True])
def test_grouped_dispatch_equals_dense_reference_in_value_and_gradient(impl, skew):
    x, wg, wu, wd, idx, w = _problem(skew=skew)

    def loss(fn_impl, x, wg, wu, wd, w):
        y = dispatch.dispatch(x, ExpertChoice(idx, w), StackedExperts(wg, wu, wd), fn_impl)
        return jnp.sum(jnp.sin(y)), y

    (_, y_ref), g_ref = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True)("dense", x, wg, wu, wd, w)
    (_, y), g = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True)(impl, x, wg, wu, wd, w)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("window", [8, 16])
def test_the_walk_takes_whole_big_windows_then_the_tail_in_windows_exactly(window):
    """``grouped_expert_mlp`` walks each group in whole windows of ``BIG_WINDOWS x window`` rows,
    then the tail in ``window``-row windows: groups of 0, 1, exactly one big window, several big
    windows plus a tail, and a tail only give each row its expert's MLP, in value and gradient."""
    from rise_jax.models.expert_mlp import SILU, expert_mlp
    from rise_jax.models.grouped_matmul import BIG_WINDOWS, grouped_expert_mlp

    big = BIG_WINDOWS * window
    sizes = np.asarray([0, 2 * big + 5, 3, big, 1, window + 1], np.int32)
    x, wg, wu, wd, *_ = _problem(n=int(sizes.sum()), e=len(sizes), seed=3)
    row_expert = jnp.asarray(np.repeat(np.arange(len(sizes)), sizes))

    def ours(x, wg, wu, wd):
        return grouped_expert_mlp(x, StackedExperts(wg, wu, wd), jnp.asarray(sizes), window=window)

    def reference(x, wg, wu, wd):  # each row through its own expert's weights
        ws = StackedExperts(wg, wu, wd).take(row_expert, x.dtype)
        return expert_mlp(x[:, None, :], ws, SILU)[:, 0, :]

    for fn in (ours, reference):
        assert fn(x, wg, wu, wd).shape == x.shape
    np.testing.assert_allclose(ours(x, wg, wu, wd), reference(x, wg, wu, wd), atol=1e-5)
    grads = [
        jax.grad(lambda *a, f=f: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2, 3))(x, wg, wu, wd)
        for f in (ours, reference)
    ]
    for a, b in zip(*grads, strict=True):  # weight gradients sum ~100 rows: relative round-off
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_loop_over_experts_reference_agrees_with_dense():
    """An independent per-token, per-slot numpy loop (MaxText-style reference)."""
    x, wg, wu, wd, idx, w = (np.asarray(a) for a in _problem(n=9))
    want = np.zeros_like(x)
    for t in range(x.shape[0]):
        for s in range(idx.shape[1]):
            e = idx[t, s]
            g = x[t] @ wg[e]
            want[t] += w[t, s] * ((g / (1 + np.exp(-g)) * (x[t] @ wu[e])) @ wd[e])
    x, wg, wu, wd, idx, w = map(jnp.asarray, (x, wg, wu, wd, idx, w))
    got = dispatch.dispatch_dense(x, ExpertChoice(idx, w), StackedExperts(wg, wu, wd))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unknown_dispatch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown MoE dispatch 'fast'"):
        dispatch.resolve_impl("fast")


def test_auto_picks_sorted_scan_on_cpu_blocks_on_gpu_and_ragged_on_tpu():
    assert dispatch.default_impl("cpu") == "grouped_scan"
    assert dispatch.default_impl("gpu") == "blocked"
    assert dispatch.default_impl("tpu") == "ragged"


@pytest.mark.parametrize("block", [1, 4, 8, 128])
@pytest.mark.parametrize("sizes", [[10, 0, 25, 13, 0], [0, 0, 0, 0, 48], [1, 1, 1, 1, 1], [0, 3, 0, 0, 0]])
def test_block_layout_puts_each_block_in_one_expert_within_the_static_bound(block, sizes):
    """Every row lands in a distinct padded slot inside its own expert's blocks, and the static block
    count covers the worst case of each non-empty group wasting almost a block."""
    from rise_jax.models.blocked_matmul import block_layout

    sizes_np = np.asarray(sizes)
    dest, expert, nb = block_layout(jnp.asarray(sizes, jnp.int32), int(sizes_np.sum()), block)
    dest, expert = np.asarray(dest), np.asarray(expert)
    assert len(set(dest.tolist())) == len(dest) and dest.max() < nb * block
    row_expert = np.repeat(np.arange(len(sizes)), sizes_np)
    np.testing.assert_array_equal(expert[dest // block], row_expert)
    assert nb >= sum(-(-s // block) for s in sizes)


@pytest.mark.parametrize("rows, experts", [(64, 64), (8192, 128), (16384, 64), (131072, 128), (10**7, 8)])
def test_block_rows_keep_the_weight_gather_under_three_matrices_per_expert(rows, experts):
    from rise_jax.models.blocked_matmul import block_layout, block_rows

    b = block_rows(rows, experts)
    assert b & (b - 1) == 0 and 8 <= b <= 1024
    nb = block_layout(jnp.zeros((experts,), jnp.int32), rows, b)[2]
    assert nb <= 3 * experts or b == 1024


@pytest.mark.parametrize("block", [None, 1, 8])
def test_blocked_dispatch_in_bf16_matches_dense_to_bf16_round_off(block):
    x, wg, wu, wd, idx, w = (a.astype(jnp.bfloat16) if a.dtype == jnp.float32 else a for a in _problem(n=64, e=8))
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    want = dispatch.dispatch_dense(f32(x), ExpertChoice(idx, f32(w)), StackedExperts(f32(wg), f32(wu), f32(wd)))
    got = dispatch.dispatch_blocked(x, ExpertChoice(idx, w), StackedExperts(wg, wu, wd), block=block)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.05 * float(jnp.abs(want).max()))


def test_weight_gradients_only_for_trainable_experts_when_asked():
    x, wg, wu, wd, idx, w = _problem()
    trainable = jnp.asarray([True, False, True, False, False, True])

    def loss(impl, wg, wu, wd, mask):
        return jnp.sum(jnp.sin(dispatch.dispatch(x, ExpertChoice(idx, w), StackedExperts(wg, wu, wd, mask), impl)))

    ref = jax.grad(loss, argnums=(1, 2, 3))("dense", wg, wu, wd, None)
    got = jax.grad(loss, argnums=(1, 2, 3))("grouped_scan", wg, wu, wd, trainable)
    keep = np.asarray(trainable)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a)[keep], np.asarray(b)[keep], atol=1e-5)
        assert not np.asarray(a)[~keep].any()


@pytest.mark.parametrize("stacked_fn", ["dispatch_grouped_scan", "dispatch_blocked"])
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_stacked_dispatch_reads_the_given_layer_and_equals_grouped_scan(param_dtype, stacked_fn):
    """The decoding path indexes ``[layer, expert]`` in stacked weights; each layer gives what
    ``grouped_scan`` gives on that layer's slice (weights cast per expert to the input dtype)."""
    layers = [_problem(n=5, seed=s) for s in range(3)]
    x, _, _, _, idx, w = layers[0]
    wg, wu, wd = (jnp.stack([p[j] for p in layers]).astype(param_dtype) for j in (1, 2, 3))
    for layer in range(3):
        layer_weights = StackedExperts(*(a[layer].astype(jnp.float32) for a in (wg, wu, wd)))
        want = dispatch.dispatch_grouped_scan(x, ExpertChoice(idx, w), layer_weights)
        fn = jax.jit(lambda x, src: getattr(dispatch, stacked_fn)(x, ExpertChoice(idx, w), src))  # noqa: B023
        got = fn(x, StackLayerExperts(wg, wu, wd, jnp.int32(layer)))
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("override_fn", ["dispatch_grouped_scan", "dispatch_blocked"])
def test_override_dispatch_equals_combined_weights_in_value_and_gradient(override_fn):
    """Subnetwork training's path: experts with a slot use their trainable copy; value and the
    gradients for x and the trainable copies equal the dense reference on the combined weights,
    and the frozen base weights get no gradient."""
    x, wg, wu, wd, idx, w = _problem(n=23)
    slots = jnp.asarray([-1, 1, -1, 0, -1, -1], jnp.int32)  # experts 3 and 1 train (slots 0, 1)
    rng = np.random.RandomState(5)
    trained = tuple(jnp.asarray(rng.randn(2, *a.shape[1:]).astype(np.float32) * 0.3) for a in (wg, wu, wd))

    def combined(trained):
        use = (slots >= 0)[:, None, None]
        return [jnp.where(use, t[jnp.maximum(slots, 0)], b) for b, t in zip((wg, wu, wd), trained, strict=True)]

    def loss_ref(x, trained):
        return jnp.sum(jnp.sin(dispatch.dispatch_dense(x, ExpertChoice(idx, w), StackedExperts(*combined(trained)))))

    def loss(x, trained, base):
        source = SubstitutedExperts(StackedExperts(*base), trained, slots)
        return jnp.sum(jnp.sin(getattr(dispatch, override_fn)(x, ExpertChoice(idx, w), source)))

    want = jax.value_and_grad(loss_ref, argnums=(0, 1))(x, trained)
    got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, trained, (wg, wu, wd))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1][0], want[1][0], atol=1e-5)
    for a, b in zip(got[1][1], want[1][1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert all(not np.any(np.asarray(g)) for g in got[1][2])


def _sources():
    """One of each weight source over the same problem (6 experts)."""
    x, wg, wu, wd, idx, w = _problem(n=29)
    rng = np.random.RandomState(7)
    slots = jnp.asarray([0, -1, -1, 2, 1, -1], jnp.int32)
    trained = tuple(jnp.asarray(rng.randn(3, *a.shape[1:]).astype(np.float32) * 0.3) for a in (wg, wu, wd))
    stack = tuple(jnp.stack([a * 0.5, a, a * 2.0]) for a in (wg, wu, wd))  # the problem's weights are layer 1
    return (x, idx, w), {
        "stacked": StackedExperts(wg, wu, wd),
        "stacked_some_trainable": StackedExperts(wg, wu, wd, jnp.asarray([True, False, True, True, False, False])),
        "substituted": SubstitutedExperts(StackedExperts(wg, wu, wd), trained, slots),
        "stack_layer": StackLayerExperts(*stack, jnp.int32(1)),
        # training on an int8 base: trained copies over quantized frozen experts
        "substituted_int8": SubstitutedExperts(
            StackedExperts(*(QuantizedArray(*quantize(a, "int8"), dtype=jnp.float32) for a in (wg, wu, wd))),
            trained,
            slots,
        ),
    }


@pytest.mark.parametrize(
    "source_name", ["stacked", "stacked_some_trainable", "substituted", "stack_layer", "substituted_int8"]
)
@pytest.mark.parametrize("impl", ["ragged", "grouped_scan", "blocked"])
def test_every_weight_source_gives_the_dense_reference_through_every_dispatch(source_name, impl):
    """Each source through each implementation equals ``dense`` through the same source in fp32:
    the output, the gradient for the tokens and the gradients for the source's parameters (only
    the experts ``trainable()`` names get a non-zero one)."""
    (x, idx, w), sources = _sources()
    source = sources[source_name]

    def loss(fn_impl, x, params):
        y = dispatch.dispatch(x, ExpertChoice(idx, w), source.with_params(params), fn_impl)
        return jnp.sum(jnp.sin(y)), y

    grad = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)
    (_, y_ref), (gx_ref, gp_ref) = grad("dense", x, source.params())
    (_, y), (gx, gp) = jax.jit(grad, static_argnums=0)(impl, x, source.params())
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-5)
    assert jax.tree_util.tree_structure(gp) == jax.tree_util.tree_structure(gp_ref)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gp_ref), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        if source_name == "stacked_some_trainable":  # the other experts get exactly zero
            assert not np.asarray(a)[~np.asarray(source.trainable())].any()
    if source_name == "stack_layer":  # reads layer 1 of the stack: the plain layer's values
        want = dispatch.dispatch_dense(x, ExpertChoice(idx, w), sources["stacked"])
        np.testing.assert_allclose(y, want, atol=1e-6)
