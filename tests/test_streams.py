"""Every random stream comes from one SeedSequence per (seed, n_real), by name."""

import numpy as np
import pytest

from runners import streams


def test_a_stream_is_reproducible_and_names_are_independent():
    a = streams.rng("split", 3, 50).integers(0, 2**62, 8)
    assert np.array_equal(a, streams.rng("split", 3, 50).integers(0, 2**62, 8))
    draws = {name: streams.rng(name, 3, 50).integers(0, 2**62, 8).tobytes() for name in streams.STREAMS}
    assert len(set(draws.values())) == len(streams.STREAMS)  # no two named streams coincide


def test_seed_and_base_size_both_select_the_stream():
    seeds = {(s, r): streams.torch_seed("classifier", s, r) for s in range(4) for r in (25, 50, 100)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**63 for v in seeds.values())  # torch.manual_seed takes a non-negative int64
    assert streams.torch_seed("generator_sample", 1) != streams.torch_seed("generator_sample", 1, 25)


def test_seed_arithmetic_collisions_of_the_old_scheme_are_gone():
    """seed*100_003 + n_real collided for (0, 100_003) and (1, 0); hand offsets like seed+1 overlapped the
    next seed's stream. Named SeedSequence children cannot."""
    assert streams.torch_seed("classifier", 0, 100_003) != streams.torch_seed("classifier", 1, 0)
    assert streams.torch_seed("generator_sample", 0, 25) != streams.torch_seed("generator_train", 1, 25)


def test_unknown_stream_names_are_refused():
    with pytest.raises(KeyError, match="unknown random stream"):
        streams.rng("classifer", 0, 25)
