"""The dialogue adapter: the simulator's consistency, the language layer, the environment's contract and masks, the
MoE-LM's expert heads, the managers (short runs beat the uniform choice), the CLI with bit-for-bit resume, bad
input, and (slow) planning ahead of the one-step greedy oracle."""

from __future__ import annotations

import json

import pytest
import torch
from test_algorithm_contract import assert_same_state

from rlcore import cli, envs
from rlcore.adapters import dialogue
from rlcore.adapters.dialogue import language as L
from rlcore.adapters.dialogue.cli import load_agent
from rlcore.adapters.dialogue.conversation import parse_user
from rlcore.adapters.dialogue.moe_lm import MoELMConfig, collect_dialogues, load_moe_lm


def random_acts(n: int, generator: torch.Generator, num_topics: int = 6):
    intent = torch.randint(0, len(L.INTENTS), (n,), generator=generator)
    topic = torch.randint(0, num_topics, (n,), generator=generator)
    item = torch.randint(0, L.ITEMS_PER_TOPIC, (n,), generator=generator)
    return intent, topic, item


def play_simulator(n: int = 2_000, turns: int = 12, seed: int = 0):
    """Random bot acts against fresh users; yields (state before, act, state after, reply) per turn."""
    sim = dialogue.UserSimulator(dialogue.DialogueConfig())
    g = torch.Generator().manual_seed(seed)
    state = sim.sample(n, g)
    for _ in range(turns):
        intent, topic, item = random_acts(n, g)
        topic = torch.where((intent == L.RECOMMEND) | (intent == L.CHANGE_TOPIC) | (intent == L.STAY), topic, -1)
        new, reply = sim.respond(state, intent, topic, item, g)
        yield state, (intent, topic, item), new, reply
        state = new


# ---------------------------------------------------------------------------------------------- simulator
def test_a_topic_of_no_interest_is_never_rewarded_and_satisfaction_stays_in_range():
    config = dialogue.DialogueConfig()
    checked = 0
    for state, (intent, topic, _), new, reply in play_simulator():
        topical = topic >= 0
        about = torch.where(topical, topic, state.topic)
        interest = state.interest.gather(1, about[:, None]).squeeze(1)
        no_interest = topical & (interest == 0) & (intent != L.EMPATHISE)
        assert (reply.satisfaction_change[no_interest] <= 0).all()
        assert not reply.accepted[no_interest].any()
        checked += int(no_interest.sum())
        assert ((new.satisfaction >= 0) & (new.satisfaction <= config.max_satisfaction)).all()
        torch.testing.assert_close(reply.satisfaction_change, new.satisfaction - state.satisfaction)
    assert checked > 1_000


def test_stated_preferences_never_contradict_the_latent_interest():
    sim = dialogue.UserSimulator(dialogue.DialogueConfig())
    said = 0
    for state, _act, _new, reply in play_simulator(seed=1):
        act, topic, level = parse_user(reply.tokens())
        assert torch.equal(act, reply.act)  # the words say the act the behaviour model chose
        stated = level >= 0
        latent = sim.level(state.interest.gather(1, topic.clamp(min=0)[:, None]).squeeze(1))
        assert torch.equal(level[stated], latent[stated])
        said += int(stated.sum())
    assert said > 2_000


def test_the_same_latent_state_and_seed_give_the_same_dialogue():
    sim = dialogue.UserSimulator(dialogue.DialogueConfig())
    users = sim.sample(64, torch.Generator().manual_seed(3))
    acts = random_acts(64, torch.Generator().manual_seed(4))
    a = sim.respond(users.clone(), *acts, torch.Generator().manual_seed(5))
    b = sim.respond(users.clone(), *acts, torch.Generator().manual_seed(5))
    assert torch.equal(a[1].tokens(), b[1].tokens()) and torch.equal(a[0].patience, b[0].patience)
    env_a, env_b = dialogue.DialogueEnv(num_envs=8, seed=0), dialogue.DialogueEnv(num_envs=8, seed=0)
    for env in (env_a, env_b):
        env.reset(seed=11)
    for _ in range(10):
        action = env_a._mask.float().argmax(1)
        out_a, out_b = env_a.step(action), env_b.step(action)
        assert torch.equal(out_a[1], out_b[1]) and torch.equal(env_a._conv.user_tokens, env_b._conv.user_tokens)


def test_templates_and_parser_round_trip():
    intent = torch.arange(5).repeat_interleave(24)
    topic = torch.arange(6).repeat(20)
    item = torch.arange(4).repeat_interleave(6).repeat(5)
    got = L.parse_bot(L.render_bot(intent, topic, item))
    assert torch.equal(got[0], intent)
    topical = (intent == L.RECOMMEND) | (intent == L.CHANGE_TOPIC) | (intent == L.STAY)
    assert torch.equal(got[1], torch.where(topical, topic, -1))
    assert torch.equal(got[2], torch.where(intent == L.RECOMMEND, item, -1))
    noise = torch.randint(3, len(L.VOCAB), (500, L.MAX_LEN), generator=torch.Generator().manual_seed(0))
    assert (L.parse_bot(noise)[0] >= 0).all()  # anything parses to an intent or UNPARSED, never fails
    assert L.detokenize(L.render_bot(torch.tensor(1), torch.tensor(4), torch.tensor(1))) == \
        "you might like kyoto , a great travel pick"


# ---------------------------------------------------------------------------------------------- environment
def test_env_follows_the_batched_candidate_set_contract():
    # The tracker alone: the learned default needs the MoE-LM of the task's turn limit (trained once per limit).
    env = dialogue.DialogueEnv(num_envs=16, seed=0, episode_length=6, history_encoder="tracker")
    assert isinstance(env, envs.BatchedEnv) and env.action_set is None
    assert isinstance(env.action_space, envs.CandidateSet) and env.action_dim == 5
    obs, _ = env.reset(seed=1)
    assert set(obs) == set(env.observation_space.spaces)
    assert obs["candidates"].shape == (16, 5, len(L.VOCAB)) and obs["candidate_mask"].dtype == torch.bool
    ended = 0
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        actions = torch.multinomial(obs["candidate_mask"].float(), 1, generator=g).squeeze(1)
        previous = obs
        obs, reward, terminated, truncated, info = env.step(actions)
        assert not (terminated & truncated).any() and reward.dtype == torch.float32
        done = terminated | truncated
        for key in obs:
            assert torch.equal(obs[key][~done], info["final_obs"][key][~done])
        if done.any():
            assert (obs["turn"][done] == 0).all()
            assert (info["final_obs"]["turn"][truncated] == 1).all()
            assert (info["episode_metrics"]["episode_length"][done] == info["final_obs"]["turn"][done, 0] * 6).all()
        ended += int(done.sum())
        assert previous["candidate_mask"].gather(1, actions[:, None]).all()
    assert ended > 0
    # An expert that abstains is masked out: ask once every topic's level is known, change topic when no other
    # topic is worth moving to.
    env._conv.stated[:] = 0
    env._conv.stated[:8, 2] = 2
    _tokens, mask = env._propose(env._conv)
    assert not mask[:, 0].any() and mask[:, 1].all()
    assert torch.equal(mask[:, 3], (env._conv.topic != 2) & (torch.arange(16) < 8))


def test_invalid_candidates_are_refused_with_the_reason():
    env = dialogue.DialogueEnv(num_envs=2, seed=0)
    env.reset(seed=0)
    env._mask[1, 3] = False  # row 1: the change-topic expert abstains
    with pytest.raises(ValueError, match=r"rows \[1\] point at candidate slots that are not on offer"):
        env.step(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        env.step(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer indices"):
        env.step(torch.tensor([0.0, 1.0]))


def test_masked_policies_never_pick_an_absent_candidate():
    env = dialogue.DialogueEnv(num_envs=64, seed=2)
    obs, _ = env.reset(seed=2)
    mask = obs["candidate_mask"].clone()
    mask[:, torch.tensor([0, 2])] = False  # only recommend, change topic and stay on offer
    mask[::2, 1] = False
    obs = {**obs, "candidate_mask": mask}
    config = dialogue.DialoguePPOConfig(num_envs=64)
    ppo = dialogue.DialoguePPOAgent(config, env.history_dim, env.embedding_dim)
    q = dialogue.DialogueQAgent(dialogue.DialogueQConfig(num_envs=64), env.history_dim, env.embedding_dim)
    for _ in range(50):
        for action in (ppo.explore(obs)[0], ppo.act(obs, deterministic=True), q.act(obs, 0), q.act(obs, 0, True)):
            assert mask.gather(1, action[:, None]).all()


def test_environment_state_resumes_exactly():
    a = dialogue.DialogueEnv(num_envs=6, seed=5)
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        a.step(torch.multinomial(a._mask.float(), 1, generator=g).squeeze(1))
    b = dialogue.DialogueEnv(num_envs=6, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(12):
        action = a._mask.float().argmax(1)
        out_a, out_b = a.step(action), b.step(action)
        assert all(torch.equal(out_a[0][k], out_b[0][k]) for k in out_a[0])
        assert torch.equal(out_a[1], out_b[1]) and torch.equal(out_a[2], out_b[2])
    with pytest.raises(ValueError, match="another dialogue task"):
        dialogue.DialogueEnv(num_envs=6, episode_length=7, history_encoder="tracker").load_state_dict(a.state_dict())


def test_history_encoders_read_only_what_was_said():
    learned = dialogue.DialogueEnv(num_envs=8, seed=0)
    tracker = dialogue.DialogueEnv(num_envs=8, seed=0, history_encoder="tracker")
    alone = dialogue.DialogueEnv(num_envs=8, seed=0, history_encoder="moe")
    assert learned.config.history_encoder == "learned"
    assert learned.history_dim == tracker.history_dim + alone.history_dim == tracker.history_dim + 64
    obs = [env.reset(seed=4)[0] for env in (learned, tracker, alone)]
    f = tracker.history_dim
    torch.testing.assert_close(obs[0]["history"], torch.cat([obs[1]["history"], obs[2]["history"]], 1))
    actions = obs[0]["candidate_mask"].float().argmax(1)
    steps = [env.step(actions)[0] for env in (learned, tracker, alone)]
    assert not torch.allclose(steps[0]["history"][:, f:], obs[0]["history"][:, f:])  # it moves with the words
    torch.testing.assert_close(steps[0]["history"], torch.cat([steps[1]["history"], steps[2]["history"]], 1))
    # Deterministic: the same seed and the same words give the same encoding.
    same = dialogue.DialogueEnv(num_envs=8, seed=0)
    torch.testing.assert_close(same.reset(seed=4)[0]["history"], obs[0]["history"])


def test_minilm_history_and_candidates_are_sentence_embeddings():
    pytest.importorskip("sentence_transformers")  # the `text` extra, installed by the `test` extra
    from rlcore.adapters.text import MiniLMEncoder

    env = dialogue.DialogueEnv(num_envs=3, seed=0, history_encoder="minilm")
    obs, _ = env.reset(seed=2)
    assert obs["history"].shape == (3, 384) and obs["candidates"].shape == (3, 5, 384)
    torch.testing.assert_close(obs["history"].norm(dim=1), torch.ones(3))
    encoder = MiniLMEncoder()
    texts = [text for _, text, _ in env.candidate_texts(0)]
    torch.testing.assert_close(obs["candidates"][0], encoder.encode(texts), atol=1e-5, rtol=1e-5)
    obs, *_ = env.step(obs["candidate_mask"].float().argmax(1))
    transcript = " ".join(env.transcripts[1][-8:])
    torch.testing.assert_close(obs["history"][1], encoder.encode([transcript])[0], atol=1e-5, rtol=1e-5)
    # Paraphrase-level similarity: a recommendation is closer to another recommendation than to a question.
    a, b, c = encoder.encode(["you might like inception , a great movies pick",
                              "you might like heat , a great movies pick", "what topic do you like most ?"])
    assert a @ b > a @ c


# ---------------------------------------------------------------------------------------------- experts
def test_moe_lm_heads_speak_their_own_intent(tmp_path, monkeypatch):
    # An empty default cache: training a MoE-LM must not need one (its data once came from an environment that
    # loaded the default MoE-LM, which recursed on a machine without the cache).
    monkeypatch.setenv("RLCORE_CACHE_DIR", str(tmp_path / "empty-cache"))
    # A model small enough to train in seconds (measured: every head 100 % its own intent; chance is 20 %).
    config = MoELMConfig(word_dim=16, hidden_dim=32, latent_dim=32, train_users=64, train_turns=16, steps=60,
                         batch_size=64, learning_rate=1e-2)
    model = load_moe_lm(config, cache_dir=tmp_path)
    assert load_moe_lm(config, cache_dir=tmp_path) is model and list((tmp_path / "dialogue").glob("moe_lm-*.pt"))
    held_out = collect_dialogues(MoELMConfig(train_users=32, train_turns=10, seed=7))
    z = model.encode_parts(held_out["features"], held_out["bot"], held_out["user"])
    chance = 1 / len(L.INTENTS)
    for head in range(len(L.INTENTS)):
        intent = L.parse_bot(model.generate(z, head))[0]
        assert (intent == head).float().mean() > 2 * chance, L.INTENTS[head]
    experts = [dialogue.MoEHeadExpert(model, i) for i in range(5)]
    env = dialogue.DialogueEnv(num_envs=4, seed=0, experts=experts, history_encoder="tracker")
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape == (4, 5, len(L.VOCAB)) and "custom" in repr(env)
    assert not (tmp_path / "empty-cache").exists()  # nothing fell back on the default model


def test_custom_experts_plug_in():
    class Parrot:
        name, intent = "parrot", None

        def propose(self, conversation):
            n = conversation.topic.shape[0]
            tokens = L.render_bot(torch.full((n,), L.STAY), conversation.topic, torch.zeros(n, dtype=torch.long))
            return tokens, torch.ones(n, dtype=torch.bool)

    env = dialogue.DialogueEnv(num_envs=3, seed=0, experts=[*dialogue.template_experts()[:2], Parrot()])
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape[1] == 3 and env.expert_names == ["ask", "recommend", "parrot"]
    m = dialogue.evaluate(dialogue.FixedExpert("parrot"), num_users=20, seed=1, env=env)
    assert m["num_users"] == 20
    with pytest.raises(ValueError, match="no expert named 'empathise'"):
        dialogue.evaluate(dialogue.FixedExpert("empathise"), num_users=5, env=env)


# ---------------------------------------------------------------------------------------------- managers
def test_baselines_and_evaluate():
    scores = {name: dialogue.evaluate(policy, num_users=300, seed=7) for name, policy in {
        "uniform": dialogue.Uniform(), "greedy": dialogue.GreedyOracle(), "ask": dialogue.FixedExpert("ask")}.items()}
    assert set(scores["uniform"]) >= {"mean_return", "return_std", "mean_turns"}
    assert scores["greedy"]["mean_return"] > scores["uniform"]["mean_return"] + 1.0
    assert scores["greedy"] == dialogue.evaluate(dialogue.GreedyOracle(), num_users=300, seed=7)
    lines = dialogue.sample_conversation(dialogue.GreedyOracle(), seed=3)
    assert lines[0].startswith("user: hi !") and lines[1].startswith("bot (")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "extra"), [
    ("ppo", {"num_steps": 16, "num_minibatches": 2}),
    ("q", {"learning_starts": 500, "batch_size": 64, "hidden_sizes": (64, 64), "epsilon_decay_steps": 2_000}),
])
def test_a_short_training_run_beats_the_uniform_choice(tmp_path, method, extra):
    env = dialogue.DialogueEnv(num_envs=32, seed=0)
    manager = dialogue.train_manager(env, method=method, total_steps=4_096, seed=0, run_dir=str(tmp_path / "run"),
                                     eval_interval=4_096, eval_episodes=64, **extra)
    assert manager.env_config == env.config and manager.train_result.run_dir == tmp_path / "run"
    trained = dialogue.evaluate(manager, num_users=300, seed=123)
    uniform = dialogue.evaluate(dialogue.Uniform(), num_users=300, seed=123)
    # Measured on this task: uniform 0.5, always recommending 3.2, the greedy oracle 3.4; a planner reaches 9-10.
    assert trained["mean_return"] > uniform["mean_return"] + 1.0, (trained, uniform)
    assert trained == dialogue.evaluate(manager, num_users=300, seed=123)


def _args(tmp_path, label, method, *extra):
    args = ["train", "dialogue", method, "--total-steps", "512", "--checkpoint-interval", "256", "--eval-interval",
            "256", "--eval-episodes", "16", "--num-envs", "16", "--no-progress", "--seed", "3",
            "--dialogue.episode-length", "10", "--dialogue.history-encoder", "tracker", "--hidden-sizes", "32", "32",
            *extra]
    return [*args, "--run-dir", str(tmp_path / label)]


@pytest.mark.parametrize(("method", "extra"), [
    ("ppo", ("--num-steps", "8", "--num-minibatches", "2", "--update-epochs", "2")),
    ("q", ("--learning-starts", "128", "--batch-size", "32")),
])
def test_cli_run_resumes_bit_for_bit_and_evaluates(tmp_path, method, extra):
    assert cli.main(_args(tmp_path, "full", method, *extra)) == 0
    assert cli.main(_args(tmp_path, "half", method, *extra, "--total-steps", "256")) == 0
    assert cli.main(["train", "dialogue", "--resume", str(tmp_path / "half"), "--total-steps", "512"]) == 0
    full, _, full_ckpt = load_agent(tmp_path / "full")
    resumed, config, resumed_ckpt = load_agent(tmp_path / "half")
    assert full_ckpt["step"] == resumed_ckpt["step"] == 512 and config.dialogue.episode_length == 10
    assert_same_state(full.state_dict(), resumed.state_dict())
    evaluations = [[json.loads(line) for line in (tmp_path / d / "evaluations.jsonl").read_text().splitlines()]
                   for d in ("full", "half")]
    assert [e["returns"] for e in evaluations[0]] == [e["returns"] for e in evaluations[1]]
    result = cli.evaluate_run(tmp_path / "full")
    assert result["returns"] == pytest.approx(evaluations[0][-1]["returns"], abs=1e-5)
    assert cli.main(["eval", str(tmp_path / "full"), "--episodes", "8"]) == 0


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reward": "clicks"}, r"reward must be one of 'satisfaction', 'accepted'; got 'clicks'"),
    ({"num_topics": 9}, r"num_topics must be an integer in \[2, 6\], got 9"),
    ({"experts": "gpt"}, r"experts must be 'template' or 'moe', got 'gpt'"),
    ({"history_encoder": "bert"}, r"history_encoder must be one of 'learned', 'tracker', 'moe', 'minilm'; got "
                                  r"'bert'"),
    ({"temperature": 1.0}, r"unknown argument\(s\) \['temperature'\]"),
    ({"num_envs": 0}, r"num_envs must be an integer >= 1"),
])
def test_bad_environment_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dialogue.DialogueEnv(**kwargs)


def test_bad_training_and_evaluation_requests_are_named(tmp_path):
    env = dialogue.DialogueEnv(num_envs=2)
    with pytest.raises(ValueError, match=r"method must be one of 'ppo', 'q'; got 'dqn'"):
        dialogue.train_manager(env, method="dqn")
    with pytest.raises(ValueError, match="env must be a DialogueEnv"):
        dialogue.train_manager(envs.CandidateChoiceEnv(2))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lr'\]"):
        dialogue.train_manager(env, lr=0.1)
    with pytest.raises(ValueError, match="leave random_steps at 0"):
        dialogue.train_manager(env, method="q", random_steps=10, run_dir=str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="num_users must be an integer >= 1"):
        dialogue.evaluate(dialogue.Uniform(), num_users=0)
    with pytest.raises(ValueError, match="policy must have act"):
        dialogue.evaluate(object())
    with pytest.raises(ValueError, match="unknown intent 'joke'"):
        dialogue.TemplateExpert("joke")
    assert not (tmp_path / "bad").exists()
    assert cli.main(["train", "dialogue", "dqn"]) == 2


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
@pytest.mark.parametrize("method", ["ppo", "q"])
def test_planning_beats_the_greedy_oracle(tmp_path, method):
    env = dialogue.DialogueEnv(num_envs=64, seed=0)
    manager = dialogue.train_manager(env, method=method, total_steps=50_000, seed=0, run_dir=str(tmp_path / "run"))
    greedy = dialogue.evaluate(dialogue.GreedyOracle(), num_users=2_000, seed=123)["mean_return"]
    trained = dialogue.evaluate(manager, num_users=2_000, seed=123)["mean_return"]
    assert trained > 1.2 * greedy, (trained, greedy)
