"""The categorical divergences under pmap and shard_map on 8 CPU devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import divergences as dv

FUNCTIONS = {
  "kl": dv.kl_divergence,
  "js": functools.partial(dv.js_divergence, beta=0.3),
  "total_variation": dv.total_variation,
  "renyi": functools.partial(dv.renyi_divergence, alpha=2.0),
  "cauchy_schwarz": dv.cauchy_schwarz_divergence,
  "generic_neyman": functools.partial(dv.f_divergence, "neyman_chi2"),
}


@pytest.fixture
def logits():
  rng = np.random.default_rng(0)
  p = rng.standard_normal((8, 4, 16)).astype(np.float32)
  q = rng.standard_normal((8, 4, 16)).astype(np.float32)
  p[0, 0, :3] = -np.inf
  where = rng.random((8, 4)) < 0.8
  return p, q, where


def test_eight_devices_are_available():
  assert jax.device_count() == 8


@pytest.mark.parametrize("name", FUNCTIONS)
def test_pmap_matches_single_device(name, logits):
  fn = FUNCTIONS[name]
  p, q, where = logits
  expected = fn(p, q, where=where)
  per_device = jax.pmap(lambda a, b, w: fn(a, b, where=w))(p, q, where)
  np.testing.assert_allclose(per_device, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_shard_map_matches_single_device(name, logits):
  fn = FUNCTIONS[name]
  p, q, where = logits
  mesh = Mesh(np.array(jax.devices()), ("data",))

  @functools.partial(
    jax.shard_map,
    mesh=mesh,
    in_specs=(P("data"), P("data"), P("data")),
    out_specs=P(),
  )
  def mean_divergence(a, b, w):
    # Sums and counts reduced across devices give an exact masked mean.
    total = jax.lax.psum(jnp.sum(fn(a, b, where=w)), "data")
    count = jax.lax.psum(jnp.sum(w), "data")
    return total / count

  expected = np.sum(fn(p, q, where=where)) / np.sum(where)
  np.testing.assert_allclose(
    jax.jit(mean_divergence)(p, q, where), expected, rtol=1e-5
  )


def test_gradients_with_sharded_inputs(logits):
  p, q, where = logits
  mesh = Mesh(np.array(jax.devices()), ("data",))

  def loss(b):
    return jnp.sum(dv.js_divergence(p, b, where=where))

  sharded = jax.jit(
    jax.grad(loss),
    in_shardings=jax.NamedSharding(mesh, P("data")),
    out_shardings=jax.NamedSharding(mesh, P("data")),
  )
  np.testing.assert_allclose(
    sharded(q), jax.grad(loss)(q), rtol=1e-5, atol=1e-7
  )
