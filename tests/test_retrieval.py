"""The retrieval adapter: faiss and torch indexes agree, approximate recall, reward terms on hand-computed sets,
the fan-out environment's contract (rewards sum to the set reward, auto-reset, seeding, resume), the baselines,
and (slow) a PPO fan-out policy ahead of the single-query and naive fan-out baselines on unseen intents."""

from __future__ import annotations

import math
import subprocess
import sys

import faiss
import pytest
import torch

from rlcore import envs
from rlcore.adapters import retrieval

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)  # the CI machine has 2 cores shared with other jobs


@pytest.fixture(scope="module")
def cat() -> retrieval.Catalogue:
    return retrieval.synthetic_catalogue(num_items=2_400, num_clusters=24, num_intents=40, dim=16, seed=3)


def random_queries(env: retrieval.FanOutRetrievalEnv, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(env.num_envs, env.action_dim, generator=generator) * 2 - 1


# ---------------------------------------------------------------------------------------------- index
def test_faiss_and_torch_exact_indexes_return_the_same_top_k():
    g = torch.Generator().manual_seed(0)
    items, queries = torch.randn(3_000, 24, generator=g), torch.randn(64, 24, generator=g)
    fa = retrieval.VectorIndex(items, retrieval.IndexConfig(backend="faiss"))
    th = retrieval.VectorIndex(items, retrieval.IndexConfig(backend="torch"))
    assert (fa.backend, th.backend) == ("faiss", "torch")
    s_fa, i_fa = fa.search(queries, 10)
    s_th, i_th = th.search(queries, 10)
    assert torch.equal(i_fa, i_th) and i_fa.dtype == torch.long
    torch.testing.assert_close(s_fa, s_th, rtol=1e-5, atol=1e-5)
    brute = (queries.double() @ items.double().T).topk(10, dim=1)  # float64 brute force, independent of both
    assert torch.equal(i_th, brute.indices)
    assert (s_th[:, :-1] >= s_th[:, 1:]).all()  # best first


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_recall_most_of_the_exact_top_k(cat, kind):
    queries = retrieval.env.unit(cat.intents + 0.3 * torch.randn(cat.intents.shape, generator=torch.Generator()
                                                                  .manual_seed(1)))
    exact = cat.index.search(queries, 10)[1]
    approx = retrieval.VectorIndex(cat.items, retrieval.IndexConfig(kind=kind, ivf_nprobe=16)).search(queries, 10)[1]
    recall = retrieval.recall_at_k(approx, exact)
    assert 0.9 <= recall <= 1.0, f"{kind} recall@10 {recall:.3f}"
    assert retrieval.recall_at_k(exact, exact) == 1.0
    assert retrieval.recall_at_k(exact.flip(0), exact) < 0.5  # a wrong answer is measured as one


def test_without_faiss_the_exact_index_falls_back_to_torch_and_approximate_ones_name_the_extra():
    # A fresh interpreter in which `import faiss` fails, as on an install without the retrieval extra.
    code = """
import sys
sys.modules["faiss"] = None
import torch
from rlcore.adapters import retrieval
assert not retrieval.has_faiss()
items = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
index = retrieval.VectorIndex(items)
assert index.backend == "torch"
assert torch.equal(index.search(items[:5], 3)[1], (items[:5].double() @ items.double().T).topk(3).indices)
try:
    retrieval.VectorIndex(items, retrieval.IndexConfig(kind="hnsw"))
except ValueError as err:
    assert "pip install rlcore[retrieval]" in str(err), err
else:
    raise AssertionError("hnsw without faiss was accepted")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_bad_index_requests_are_named():
    items = torch.randn(50, 8)
    with pytest.raises(ValueError, match="approximate and needs backend='faiss'"):
        retrieval.VectorIndex(items, retrieval.IndexConfig(kind="hnsw", backend="torch"))
    with pytest.raises(ValueError, match="kind must be one of"):
        retrieval.IndexConfig(kind="lsh").validate()
    index = retrieval.VectorIndex(items)
    with pytest.raises(ValueError, match=r"queries must be a \[batch, 8\]"):
        index.search(torch.randn(3, 7), 5)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, num_items\]"):
        index.search(torch.randn(3, 8), 51)


# ---------------------------------------------------------------------------------------------- rewards
def test_reward_terms_on_hand_computed_sets():
    # 4 items on the axes of R^3 (items 0 and 1 identical), aspects 0, 0, 1, 2; the intent owns aspects 0 and 1.
    emb = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    aspect = torch.tensor([0, 0, 1, 2])
    owned = torch.tensor([[True, True, False]]).expand(4, 3)
    ids = torch.tensor([[0, 2, -1, -1],    # one item of each owned aspect
                        [0, 0, 1, -1],     # a repeat, and two identical items
                        [3, -1, -1, -1],   # only an item of an aspect the intent does not own
                        [-1, -1, -1, -1]])  # empty
    torch.testing.assert_close(retrieval.coverage(ids, aspect, owned), torch.tensor([1.0, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(retrieval.relevance(ids, aspect, owned), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # Vendi: two orthogonal items -> 2; two identical items -> 1; one item -> 1; empty -> 0.
    torch.testing.assert_close(retrieval.vendi_score(ids, emb), torch.tensor([2.0, 1.0, 1.0, 0.0]))
    # Cosine distance: orthogonal pair 1; identical pair 0.
    torch.testing.assert_close(retrieval.mean_pairwise_distance(ids, emb), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # Duplicates: row 1 has 3 filled slots, one of which repeats item 0.
    torch.testing.assert_close(retrieval.duplicate_penalty(ids), torch.tensor([0.0, 1 / 3, 0.0, 0.0]))
    config = retrieval.SetRewardConfig(coverage=1.0, relevance=0.5, diversity=0.25, duplicates=0.25)
    value, terms = retrieval.set_reward(ids, emb, aspect, owned, config)
    expected = torch.tensor([1 + 0.5 + 0.25 * 2 / 4, 0.5 + 0.5 + 0.25 / 4 - 0.25 / 3, 0.25 / 4, 0.0])
    torch.testing.assert_close(value, expected)
    pairwise = retrieval.composite_reward(terms, retrieval.SetRewardConfig(diversity_measure="pairwise"), 4)
    torch.testing.assert_close(pairwise - value, 0.25 * (terms["pairwise_distance"] / 2 - terms["vendi"] / 4))


def test_vendi_score_counts_effective_distinct_items():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]  # 8 orthonormal rows
    ids = torch.arange(8)[None]
    assert math.isclose(float(retrieval.vendi_score(ids, basis)), 8.0, rel_tol=1e-5)
    # two groups of 4 identical items: 2 effective items
    grouped = basis[[0, 0, 0, 0, 1, 1, 1, 1]]
    assert math.isclose(float(retrieval.vendi_score(ids, grouped)), 2.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="diversity_measure"):
        retrieval.SetRewardConfig(diversity_measure="entropy").validate()


# ---------------------------------------------------------------------------------------------- environment
def test_env_follows_the_batched_contract_and_rewards_sum_to_the_set_reward(cat):
    env = retrieval.FanOutRetrievalEnv(cat, num_envs=6, num_subqueries=3, top_k=5, seed=0)
    assert isinstance(env, envs.BatchedEnv) and env.obs_dim == 3 * 16 + 1 and env.action_dim == 16
    obs, _ = env.reset(seed=1)
    assert set(obs) == set(env.observation_space.spaces) and (obs["retrieved"] == 0).all()
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(6)
    for j in range(3):
        actions = random_queries(env, g)
        obs, reward, terminated, truncated, info = env.step(actions)
        total += reward
        assert reward.dtype == torch.float32 and not truncated.any()
        assert bool(terminated.all()) == (j == 2)  # the set is complete after K steps
        assert info["retrieved"].shape == (6, 5)
    metrics = info["episode_metrics"]
    torch.testing.assert_close(total, metrics["set_reward"])
    assert set(retrieval.TERMS) <= set(metrics)
    # Same-step auto-reset: the returned obs starts the next intent, final_obs is the completed set's.
    assert (obs["step"] == 0).all() and (obs["retrieved"] == 0).all() and (obs["last_query"] == 0).all()
    assert torch.allclose(info["final_obs"]["step"], torch.ones(6, 1))
    assert (info["final_obs"]["retrieved"].norm(dim=1) > 0).all()


def test_env_observation_summarises_what_was_retrieved(cat):
    env = retrieval.FanOutRetrievalEnv(cat, num_envs=2, num_subqueries=2, top_k=4)
    obs, _ = env.reset(seed=0)
    query = obs["intent"].clone()
    obs, _, _, _, info = env.step(query)
    torch.testing.assert_close(obs["retrieved"], cat.items[info["retrieved"]].mean(1))
    torch.testing.assert_close(obs["last_query"], retrieval.env.unit(query))
    assert torch.equal(info["retrieved"], cat.index.search(retrieval.env.unit(query), 4)[1])


def test_env_seeding_and_state_dict_resume_exactly(cat):
    def play(env, steps, seed):
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(steps):
            obs, reward, *_ = env.step(random_queries(env, g))
            out.append((obs["intent"].clone(), reward.clone()))
        return out

    a = retrieval.FanOutRetrievalEnv(cat, num_envs=4, num_subqueries=3, top_k=5, seed=7)
    b = retrieval.FanOutRetrievalEnv(cat, num_envs=4, num_subqueries=3, top_k=5, seed=7)
    assert torch.equal(a.reset()[0]["intent"], b.reset()[0]["intent"])
    assert not torch.equal(a.reset(seed=1)[0]["intent"], a.reset(seed=2)[0]["intent"])
    train_ids = set(cat.train_intents.tolist())
    assert all(int(i) in train_ids for i in a._intent)  # episodes draw from the train split
    a.reset(seed=5)
    play(a, 2, 0)  # mid-episode
    state = a.state_dict()
    expected = play(a, 5, 1)  # crosses an episode boundary
    b.load_state_dict(state)
    for (oa, ra), (ob, rb) in zip(expected, play(b, 5, 1), strict=True):
        assert torch.equal(oa, ob) and torch.equal(ra, rb)
    other = retrieval.FanOutRetrievalEnv(cat, num_envs=4, num_subqueries=2, top_k=5)
    with pytest.raises(ValueError, match="another catalogue or task"):
        other.load_state_dict(state)
    grouped = retrieval.FanOutRetrievalEnv(cat, num_envs=8, group_size=4, seed=0)
    intents = grouped.reset(seed=3)[0]["intent"]
    assert torch.equal(intents[:4], intents[[0] * 4]) and torch.equal(intents[4:], intents[[4] * 4])
    with pytest.raises(ValueError, match="group_size must be an integer >= 1 that divides num_envs"):
        retrieval.FanOutRetrievalEnv(cat, num_envs=6, group_size=4)


@pytest.mark.parametrize("actions, message", [
    (torch.zeros(2, 15), r"shape \[num_envs, \*action_shape\]"),
    (torch.full((2, 16), float("nan")), "NaN"),
    (torch.zeros(2, 16), "nonzero"),
    (torch.zeros(2, 16, dtype=torch.long), "floating-point"),
])
def test_bad_sub_queries_are_refused(cat, actions, message):
    env = retrieval.FanOutRetrievalEnv(cat, num_envs=2)
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_bad_environment_arguments_are_named(cat):
    with pytest.raises(ValueError, match="top_k must be an integer"):
        retrieval.FanOutRetrievalEnv(cat, top_k=0)
    with pytest.raises(ValueError, match="split must be one of"):
        retrieval.FanOutRetrievalEnv(cat, split="valid")
    with pytest.raises(ValueError, match=r"catalogue must be a retrieval\.Catalogue"):
        retrieval.FanOutRetrievalEnv(torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------- catalogue, baselines
def test_catalogue_is_seeded_and_split(cat):
    again = retrieval.synthetic_catalogue(num_items=2_400, num_clusters=24, num_intents=40, dim=16, seed=3)
    assert torch.equal(cat.items, again.items) and torch.equal(cat.intent_aspects, again.intent_aspects)
    assert not torch.equal(cat.items, retrieval.synthetic_catalogue(2_400, 24, 40, 16, seed=4).items)
    assert (cat.intent_aspects.sum(1) == 4).all()
    assert set(cat.train_intents.tolist()).isdisjoint(cat.test_intents.tolist())
    assert len(cat.train_intents) + len(cat.test_intents) == 40
    with pytest.raises(ValueError, match="unknown argument"):
        retrieval.synthetic_catalogue(clusters=3)


def test_text_catalogue_embeds_real_texts_with_exact_ground_truth():
    pytest.importorskip("sentence_transformers")  # the `text` extra, installed by the `test` extra
    from rlcore.adapters.retrieval.text_catalogue import ASPECTS, INTENTS
    from rlcore.adapters.text import MiniLMEncoder

    text = retrieval.text_catalogue(items_per_aspect=8, num_intents=40, dim=None, seed=1)
    assert text.items.shape == (8 * len(ASPECTS), 384) and text.intents.shape == (40, 384)
    assert len(set(text.item_texts)) == len(text.item_texts) and text.intent_texts[0] == INTENTS[0][0]
    assert len(set(text.intent_texts)) == 40 and text.intent_aspects.sum(1).tolist() == [4] * 40
    assert len({tuple(row.tolist()) for row in text.intent_aspects}) == 40  # composed intents: new aspect sets
    torch.testing.assert_close(text.items[:3], MiniLMEncoder().encode(list(text.item_texts[:3])))
    # Real semantics: most of a single query's top items belong to the intent's own aspects (chance: 4 / 28;
    # measured 0.64).
    ids = retrieval.SingleQuery(text, 1).retrieve(text.intents, 10)
    on_intent = text.intent_aspects.gather(1, text.item_aspect[ids]).float().mean()
    assert on_intent > 0.5, on_intent
    # The projection keeps neighbourhoods: the same single query mostly finds the same items in 32 dimensions.
    small = retrieval.text_catalogue(items_per_aspect=8, num_intents=40, dim=32, seed=1)
    assert small.dim == 32 and small.item_texts == text.item_texts
    overlap = (retrieval.SingleQuery(small, 1).retrieve(small.intents, 10)[:, :, None] == ids[:, None, :]).any(2)
    assert overlap.float().mean() > 0.5
    assert set(text.train_intents.tolist()) | set(text.test_intents.tolist()) == set(range(40))
    # An index straight from text, queried with text.
    index = retrieval.VectorIndex.from_texts(["a red tent for camping", "a chef's knife", "a yoga mat"])
    assert index.search(index.encode(["knives for my kitchen"]), 1)[1].item() == 1
    assert index.texts[1] == "a chef's knife"
    with pytest.raises(ValueError, match="items_per_aspect must be at most 320"):
        retrieval.text_catalogue(items_per_aspect=400)
    with pytest.raises(ValueError, match="texts must be a non-empty list of strings"):
        retrieval.VectorIndex.from_texts("a tent")


def test_baselines_fill_the_same_budget_and_evaluate(cat):
    intents = cat.intents[:5]
    single = retrieval.SingleQuery(cat, 4).retrieve(intents, 10)
    assert torch.equal(single, cat.index.search(intents, 40)[1])
    # MMR with λ = 0 is relevance order: the single query's list.
    assert torch.equal(retrieval.MMR(cat, 40, diversity=0.0).retrieve(intents, 10), single)
    mmr = retrieval.MMR(cat, 40, diversity=0.7).retrieve(intents, 10)
    assert mmr.shape == (5, 40) and (retrieval.distinct_mask(mmr)).all()
    assert (retrieval.vendi_score(mmr, cat.items) > retrieval.vendi_score(single, cat.items)).all()
    naive = retrieval.NaiveFanOut(cat, 4)
    assert torch.equal(naive.retrieve(intents, 10), naive.retrieve(intents, 10))  # seeded per call
    with pytest.raises(ValueError, match="needs top_k < fetch"):
        retrieval.MMR(cat, 10).retrieve(intents, 10)
    scores = {name: retrieval.evaluate(r, cat, split="test", top_k=10)
              for name, r in {"single": retrieval.SingleQuery(cat), "naive": retrieval.NaiveFanOut(cat, 4),
                              "mmr": retrieval.MMR(cat, 40), "greedy": retrieval.SetRewardGreedy(cat, 40)}.items()}
    for m in scores.values():
        assert {"coverage", "diversity", "set_reward", "ms_per_query"} <= set(m) and 0 <= m["coverage"] <= 1
    with pytest.raises(ValueError, match="retriever must have"):
        retrieval.evaluate(object(), cat)


def brute_force_greedy(cat, intent, owned, budget, fetch_size, reward):
    """Greedy on the library's set_reward, one candidate set at a time (the reference for SetRewardGreedy)."""
    cand = cat.index.search(intent[None], fetch_size)[1][0].tolist()
    picks: list[int] = []
    for _ in range(budget):
        best, best_value = None, -math.inf
        for c in cand:
            if c in picks:
                continue
            ids = torch.tensor([[*picks, c]])
            value = float(retrieval.composite_reward(
                retrieval.set_reward_terms(ids, cat.items, cat.item_aspect, owned[None]), reward, budget))
            if value > best_value + 1e-9:
                best, best_value = c, value
        picks.append(best)
    return picks


@pytest.mark.parametrize("measure", ["pairwise", "vendi"])
def test_set_reward_greedy_is_greedy_on_the_composite_set_reward(cat, measure):
    reward = retrieval.SetRewardConfig(diversity_measure=measure)
    intents = cat.test_intents[:3]
    greedy = retrieval.SetRewardGreedy(cat, fetch=6, num_subqueries=2, reward=reward, aspects="oracle",
                                       shortlist=None)
    ids = greedy.retrieve(cat.intents[intents], top_k=4)
    assert ids.shape == (3, 8) and retrieval.distinct_mask(ids).all()
    for row, q in zip(ids.tolist(), intents.tolist(), strict=True):
        assert row == brute_force_greedy(cat, cat.intents[q], cat.intent_aspects[q], 8, 12, reward)
    # The label-free variant estimates the aspects from the fetched list; the shortlist only prunes Vendi's
    # exact evaluations, so with the pairwise measure (ranked exactly) it changes nothing.
    pool = retrieval.SetRewardGreedy(cat, 40, reward=reward)
    assert retrieval.distinct_mask(pool.retrieve(cat.intents[:5], 10)).all()
    if measure == "pairwise":
        full = retrieval.SetRewardGreedy(cat, 40, reward=reward, shortlist=None)
        assert torch.equal(pool.retrieve(cat.intents[:5], 10), full.retrieve(cat.intents[:5], 10))


def test_set_reward_greedy_refuses_what_it_cannot_do(cat):
    with pytest.raises(ValueError, match="aspects must be one of"):
        retrieval.SetRewardGreedy(cat, aspects="labels")
    with pytest.raises(ValueError, match="shortlist must be"):
        retrieval.SetRewardGreedy(cat, shortlist=0)
    with pytest.raises(ValueError, match="needs top_k < fetch"):
        retrieval.SetRewardGreedy(cat, 10).retrieve(cat.intents[:2], 10)
    with pytest.raises(ValueError, match="not among them"):  # the oracle reads labels of catalogue intents only
        retrieval.SetRewardGreedy(cat, aspects="oracle").retrieve(torch.randn(2, cat.dim), 5)


# ---------------------------------------------------------------------------------------------- PPO fan-out
def test_ppo_fan_out_is_deterministic_in_its_seed_and_leaves_the_global_rng_alone(cat):
    config = retrieval.FanOutPPOConfig(num_envs=8, iterations=3, epochs=2, top_k=5, num_subqueries=3, seed=2)
    before = torch.random.get_rng_state()
    first = retrieval.train_fanout(cat, config)
    assert torch.equal(before, torch.random.get_rng_state())
    second = retrieval.train_fanout(cat, config)
    assert first.history == second.history and len(first.history) == 3
    for p, q in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert torch.equal(p, q)
    ids = first.policy.retrieve(cat.intents[:4], 5)
    assert ids.shape == (4, 15) and (ids >= 0).all()
    # The untrained policy (zero residual) is a single query repeated: its first sub-query is the intent's top-k.
    untrained = retrieval.FanOutPolicy(cat, num_subqueries=2)
    assert torch.equal(untrained.retrieve(cat.intents[:4], 5)[:, :5], cat.index.search(cat.intents[:4], 5)[1])


def test_ppo_fan_out_resumes_bit_for_bit_from_its_checkpoint(cat, tmp_path):
    config = retrieval.FanOutPPOConfig(num_envs=8, iterations=6, epochs=2, top_k=5, num_subqueries=3, seed=4)
    whole = retrieval.train_fanout(cat, config)
    import dataclasses

    retrieval.train_fanout(cat, dataclasses.replace(config, iterations=4), run_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(ValueError, match="already holds a fan-out checkpoint"):
        retrieval.train_fanout(cat, config, run_dir=tmp_path)
    with pytest.raises(ValueError, match="its learning_rate is"):
        retrieval.train_fanout(cat, dataclasses.replace(config, learning_rate=1e-2), run_dir=tmp_path, resume=True)
    from rlcore.loops.run_dir import RunDirInUse, RunDirLock

    other = RunDirLock(tmp_path)  # another process training in the directory, as flock sees it
    other.acquire()
    with pytest.raises(RunDirInUse, match="in use by another training process"):
        retrieval.train_fanout(cat, config, run_dir=tmp_path, resume=True)
    other.release()
    with pytest.raises(ValueError, match="checkpoint_every must be"):  # refused: the new directory is not left
        retrieval.train_fanout(cat, config, run_dir=tmp_path / "new", checkpoint_every=0)
    assert not (tmp_path / "new").exists()
    resumed = retrieval.train_fanout(cat, config, run_dir=tmp_path, resume=True)
    assert resumed.history == whole.history
    for (name, a), b in zip(whole.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_rlcore_train_retrieval_writes_and_resumes_a_run(tmp_path):
    import json

    from rlcore.adapters.retrieval.cli import train_main

    run = tmp_path / "run"
    small = ["--catalogue.num-items", "1200", "--catalogue.num-clusters", "12", "--catalogue.num-intents", "40",
             "--catalogue.dim", "8", "--ppo.num-envs", "16", "--samples-per-intent", "2", "--keep", "1",
             "--diffusion.train-steps", "20", "--checkpoint-every", "1"]
    assert train_main([*small, "--ppo.iterations", "2", "--run-dir", str(run)]) == 0
    assert {"config.json", "checkpoint.pt", "policy.pt", "retriever.pt", "summary.json"} <= {
        p.name for p in run.iterdir()}
    assert train_main(["--resume", str(run), "--ppo.iterations", "3"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ppo_iterations"] == 3
    assert set(summary["retrievers"]) == {"single query", "naive fan-out", "MMR", "set-reward greedy", "RL fan-out",
                                          "distilled"}
    assert 0 <= summary["retrievers"]["RL fan-out"]["test"]["coverage"] <= 1
    # A setting train_fanout refuses leaves no run directory; a resume keeps the run's own catalogue and settings.
    assert train_main([*small, "--ppo.iterations", "0", "--run-dir", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert train_main(["--resume", str(run), "--catalogue.num-items", "1300"]) == 2
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_synthesised_pairs_keep_the_best_sampled_sets_and_replay_exactly(cat):
    policy = retrieval.train_fanout(cat, retrieval.FanOutPPOConfig(num_envs=8, iterations=2, epochs=1, seed=0)).policy
    pairs = retrieval.synthesise_pairs(policy, cat, split="train", samples_per_intent=6, keep=2, top_k=10, seed=1)
    n = len(cat.train_intents)
    assert pairs.subqueries.shape == (2 * n, 4, 16) and pairs.intents.shape == (2 * n, 16)
    assert torch.equal(pairs.intent_ids, cat.train_intents.repeat_interleave(2))  # only train intents: test unseen
    assert float(pairs.rewards.mean()) > pairs.sampled_mean_reward  # selection keeps the better sets
    # Objective-consistent: searching the stored sub-queries again rebuilds the sets and their rewards.
    ids = cat.index.search(pairs.subqueries.reshape(-1, 16), 10)[1].reshape(2 * n, 40)
    replayed, _ = retrieval.set_reward(ids, cat.items, cat.item_aspect, cat.intent_aspects[pairs.intent_ids])
    torch.testing.assert_close(replayed, pairs.rewards)
    again = retrieval.synthesise_pairs(policy, cat, samples_per_intent=6, keep=2, top_k=10, seed=1)
    assert torch.equal(again.subqueries, pairs.subqueries)
    with pytest.raises(ValueError, match="keep must be an integer"):
        retrieval.synthesise_pairs(policy, cat, samples_per_intent=2, keep=3)


@pytest.mark.parametrize(("prediction", "min_cosine"), [("x0", 0.99), ("epsilon", 0.65)])
def test_diffusion_retriever_learns_a_conditional_set_of_sub_queries_and_searches_once(cat, prediction, min_cosine):
    # Pairs whose targets are a known function of the intent: the centres of two of its aspects, in order.
    owned = cat.intent_aspects.float().topk(2, dim=1).indices  # [40, 2]
    targets = cat.centres[owned]  # [40, 2, 16] unit vectors
    pairs = retrieval.FanOutPairs(torch.arange(40), cat.intents, targets, torch.ones(40), 1.0)
    config = retrieval.DiffusionConfig(hidden=128, train_steps=600, batch_size=40, num_timesteps=50, sample_steps=2,
                                       learning_rate=3e-3, temperature=0.0, prediction=prediction)
    result = retrieval.distill(pairs, cat, config)
    assert result.losses[-1] < 0.5 * result.losses[0]
    sampled = result.retriever.subqueries(cat.intents)
    assert sampled.shape == (40, 2, 16) and torch.allclose(sampled.norm(dim=2), torch.ones(40, 2))
    cosine = (sampled * targets).sum(2)
    # Measured: x0-prediction 0.9994, epsilon 0.73 (0.78 with ten DDIM steps); an untrained model scores 0.01.
    # x0 must recover a near-deterministic target almost exactly: that is why it is the default.
    assert float(cosine.mean()) > min_cosine, float(cosine.mean())
    ids = result.retriever.retrieve(cat.intents[:5], 10)
    expected = cat.index.search(sampled[:5].reshape(10, 16), 10)[1].reshape(5, 20)
    assert torch.equal(ids, expected)  # one batched search of all B·K sub-queries, same x_T at every call


def test_distill_names_a_bad_setting():
    pairs = retrieval.FanOutPairs(torch.arange(4), torch.randn(4, 16), torch.randn(4, 2, 16), torch.ones(4), 1.0)
    cat = retrieval.synthetic_catalogue(num_items=240, num_clusters=24, num_intents=8, dim=16, seed=0)
    with pytest.raises(ValueError, match="sample_steps <= num_timesteps"):
        retrieval.distill(pairs, cat, retrieval.DiffusionConfig(sample_steps=200))
    with pytest.raises(ValueError, match=r"prediction must be one of \('x0', 'epsilon'\), got 'v'"):
        retrieval.distill(pairs, cat, retrieval.DiffusionConfig(prediction="v"))


@pytest.mark.slow
def test_r4t_distilled_retriever_keeps_most_of_the_policy_set_reward():
    cat = retrieval.synthetic_catalogue(num_items=4_800, num_clusters=24, num_intents=400, dim=32, seed=0)
    out = retrieval.r4t(cat, num_subqueries=4, top_k=10, seed=0)
    rl = retrieval.evaluate(out.policy, cat, split="test", top_k=10)
    distilled = retrieval.evaluate(out.retriever, cat, split="test", top_k=10)
    mmr = retrieval.evaluate(retrieval.MMR(cat, 40), cat, split="test", top_k=10)
    # The issue asks for >= 90 % of the policy's set reward. Measured: 0.90 with the ε-predicting residual
    # denoiser (0.85 before the residual), 0.97 with x0-prediction (1.014 against 1.043).
    assert distilled["set_reward"] >= 0.90 * rl["set_reward"], (distilled, rl)
    assert distilled["coverage"] >= mmr["coverage"] + 0.1, (distilled, mmr)


@pytest.mark.slow
def test_ppo_fan_out_beats_single_query_and_naive_fan_out_on_unseen_intents():
    # 300 train / 100 test intents. Measured (seed 0, about a minute on 2 loaded cores): test coverage 0.63 for the
    # policy, 0.32 single query, 0.37 naive fan-out, 0.375 MMR; set reward 1.07 against 0.84, 0.82, 0.89.
    cat = retrieval.synthetic_catalogue(num_items=4_800, num_clusters=24, num_intents=400, dim=32, seed=0)
    policy = retrieval.train_fanout(cat, retrieval.FanOutPPOConfig(seed=0)).policy
    rl = retrieval.evaluate(policy, cat, split="test", top_k=10)
    base = {name: retrieval.evaluate(r, cat, split="test", top_k=10)
            for name, r in {"single": retrieval.SingleQuery(cat), "naive": retrieval.NaiveFanOut(cat, 4),
                            "mmr": retrieval.MMR(cat, 40)}.items()}
    for name, m in base.items():
        assert rl["coverage"] >= m["coverage"] + 0.1, (name, rl, m)
        assert rl["set_reward"] > m["set_reward"], (name, rl, m)
