import itertools

import pytest
import torch


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (starting one costs seconds), with the rollout actors' namespace."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, namespace="rlcore", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _one_thread():
    # Small networks run fastest on one thread, and tests run beside each other on 2 cores.
    torch.set_num_threads(1)
    yield


def random_relu_net(fixed_dim: int, action_dim: int, hidden=(16, 8), seed: int = 0) -> torch.nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    sizes = [fixed_dim + action_dim, *hidden, 1]
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(fan_out, fan_in, generator=generator) / fan_in**0.5)
            linear.bias.copy_(torch.randn(fan_out, generator=generator) * 0.3)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)
