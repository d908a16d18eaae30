"""GenMuNN's two steps on a torch module (the faulty ONNX model through onnx2torch):

1. rank every weight of every layer by its influence on the correctness of the predictions
   (first-order: |w · ∂L/∂w| of the cross-entropy on the repair inputs, normalised per layer so
   that layers of different scale compete fairly) and keep the top `weights_per_layer` of each
   layer;
2. mutate those weights (Gaussian fuzzing scaled by each layer's weight spread, as the
   DeepMutation operators GenMuNN builds on) and let a genetic algorithm (tournament
   selection, uniform crossover, elitism) choose the mutants of the next round, with the
   model's accuracy on the repair inputs as fitness, until the generations, the patience or
   the budget run out.

The GA is written with numpy rather than DEAP: DEAP's `creator` registers classes globally per
process, which a service that runs several jobs at once cannot share safely, and the loop is
a few lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Target:
    """One localised weight: the torch tensor's name, its flat index, its influence score."""

    tensor: str
    flat_index: int
    index: tuple[int, ...]
    score: float


@dataclass
class SearchResult:
    genome: np.ndarray  # the localised weights' new values (the best individual)
    fitness: float
    initial_fitness: float
    generations: int
    history: list[float] = field(default_factory=list)  # best fitness after each generation


def weight_tensors(module) -> dict:
    """The layers' weight tensors (rank >= 2: Conv and dense kernels, MatMul initialisers),
    parameters and buffers alike, by name. Biases and BatchNorm vectors are left alone, as
    GenMuNN mutates the neurons' weights."""
    import torch

    named = dict(module.named_parameters())
    named.update({n: b for n, b in module.named_buffers() if b.dtype == torch.float32})
    return {n: t for n, t in named.items() if t.dim() >= 2}


def log_true_class(out, y, probabilities: bool):
    """Log-probability of the true class per input, whether the graph ends in logits or softmax."""
    import torch

    logp = torch.log(out.clamp_min(1e-7)) if probabilities else torch.log_softmax(out, dim=1)
    return logp.gather(1, y.view(-1, 1)).squeeze(1)


def rank_weights(module, x: np.ndarray, y: np.ndarray, probabilities: bool, weights_per_layer: int,
                 batch_size: int = 256) -> list[Target]:
    """Influence of each weight on the repair inputs' loss, |w · grad| summed over batches;
    the top `weights_per_layer` of each layer, best first overall (score = the layer-normalised
    influence, so 1.0 is the most influential weight of its layer)."""
    import torch

    tensors = weight_tensors(module)
    for t in tensors.values():
        t.requires_grad_(True)
        t.grad = None
    module.eval()
    for i in range(0, len(y), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))
        yb = torch.from_numpy(np.asarray(y[i:i + batch_size], dtype=np.int64))
        loss = -log_true_class(module(xb), yb, probabilities).sum()
        loss.backward()
    targets: list[Target] = []
    for name, t in tensors.items():
        influence = (t.detach() * t.grad).abs().flatten().numpy() if t.grad is not None else np.zeros(t.numel())
        t.requires_grad_(False)
        t.grad = None
        top = float(influence.max()) if influence.size else 0.0
        if top <= 0.0:
            continue
        k = min(weights_per_layer, influence.size)
        # argsort on -influence with a stable sort: ties resolve by index, so runs repeat.
        for flat in np.argsort(-influence, kind="stable")[:k]:
            targets.append(Target(name, int(flat), tuple(int(i) for i in np.unravel_index(flat, tuple(t.shape))),
                                  float(influence[flat] / top)))
    return sorted(targets, key=lambda tg: (-tg.score, tg.tensor, tg.flat_index))


class Genome:
    """Reads and writes the localised weights of a module as one vector."""

    def __init__(self, module, targets: list[Target]):
        self.tensors = weight_tensors(module)
        self.targets = targets
        self.original = np.array([float(self.tensors[t.tensor].flatten()[t.flat_index]) for t in targets], np.float32)
        # Each weight mutates on the scale of its own layer (DeepMutation's Gaussian fuzzing
        # uses the layer's weight distribution).
        self.scale = np.array([float(self.tensors[t.tensor].detach().std()) or 1e-3 for t in targets], np.float32)

    def apply(self, genome: np.ndarray) -> None:
        import torch

        with torch.no_grad():
            for value, t in zip(genome, self.targets, strict=True):
                self.tensors[t.tensor].view(-1)[t.flat_index] = float(value)


def repair_fitness(module, x: np.ndarray, y: np.ndarray, probabilities: bool, batch_size: int = 512) -> float:
    """Accuracy on the repair inputs, plus a tie-breaker below one input's worth (1e-3 × the
    mean true-class probability) so that the GA can climb between accuracy steps."""
    import torch

    correct, prob = 0, 0.0
    module.eval()
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))
            yb = torch.from_numpy(np.asarray(y[i:i + batch_size], dtype=np.int64))
            out = module(xb)
            correct += int((out.argmax(dim=1) == yb).sum())
            prob += float(log_true_class(out, yb, probabilities).exp().sum())
    n = max(len(y), 1)
    return correct / n + 1e-3 * prob / n


def genetic_search(genome: Genome, fitness: Callable[[np.ndarray], float], rng: np.random.Generator,
                   population: int, generations: int, mutation_rate: float, mutation_scale: float,
                   crossover_rate: float, tournament: int, elite: int, patience: int,
                   should_stop: Callable[[], bool], report: Callable[[int, float], None]) -> SearchResult:
    """GenMuNN's loop: mutants of the original weights, selected by repair fitness."""
    d = len(genome.original)

    def mutate(parent: np.ndarray) -> np.ndarray:
        child = parent.copy()
        hit = rng.random(d) < mutation_rate
        if not hit.any():
            hit[rng.integers(d)] = True  # every mutant differs from its parent
        child[hit] += rng.normal(0.0, mutation_scale, int(hit.sum())).astype(np.float32) * genome.scale[hit]
        return child

    # Generation 0: the original weights plus mutants of them.
    pop = [genome.original.copy()] + [mutate(genome.original) for _ in range(population - 1)]
    scores = np.array([fitness(g) for g in pop])
    initial = float(scores[0])
    best_i = int(np.argmax(scores))
    history = [float(scores[best_i])]
    stale, gen = 0, 0
    for gen in range(1, generations + 1):
        if should_stop():
            gen -= 1
            break
        order = np.argsort(-scores, kind="stable")
        nxt = [pop[i].copy() for i in order[:elite]]
        while len(nxt) < population:
            a = _tournament(scores, tournament, rng)
            b = _tournament(scores, tournament, rng)
            if rng.random() < crossover_rate:
                mask = rng.random(d) < 0.5
                child = np.where(mask, pop[a], pop[b]).astype(np.float32)
            else:
                child = pop[a].copy()
            nxt.append(mutate(child))
            if should_stop():
                break
        new_scores = [scores[order[i]] for i in range(min(elite, len(nxt)))]
        for g in nxt[len(new_scores):]:
            new_scores.append(fitness(g))
            if should_stop():
                break
        pop, scores = nxt[:len(new_scores)], np.array(new_scores)
        best = float(scores.max())
        stale = 0 if best > history[-1] + 1e-12 else stale + 1
        history.append(max(best, history[-1]))
        report(gen, history[-1])
        if stale >= patience:
            break
    best_i = int(np.argmax(scores))
    return SearchResult(pop[best_i].copy(), float(scores[best_i]), initial, gen, history)


def _tournament(scores: np.ndarray, k: int, rng: np.random.Generator) -> int:
    picks = rng.choice(len(scores), size=min(k, len(scores)), replace=False)
    return int(picks[np.argmax(scores[picks])])
