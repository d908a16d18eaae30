"""Reuters-like bags of words: 46 topics over a 1,000-word vocabulary ranked by frequency.

Every document mixes a Zipfian background (word 0 the most frequent, as in Keras's Reuters
word ranks) with its topic's own Zipfian word list and, for some documents, a second topic;
topic priors are skewed as in Reuters. The topics' word lists are one fixed "world" (the same
for every seed); seeds draw documents from it. Output: 0/1 word presence."""

from __future__ import annotations

import numpy as np

NUM_WORDS = 1_000
NUM_TOPICS = 46
_WORLD_SEED = 46_1000  # fixes the topics' vocabularies; seeds only draw documents
_TOPIC_WORDS = 40
_COMMON_WORDS = 40  # the most frequent ranks are shared function-word-like tokens


def _world() -> tuple[np.ndarray, np.ndarray]:
    """(background word distribution (W,), topic word distributions (T, W))."""
    rng = np.random.default_rng(_WORLD_SEED)
    ranks = np.arange(1, NUM_WORDS + 1, dtype=np.float64)
    background = 1.0 / ranks
    background /= background.sum()
    topics = np.zeros((NUM_TOPICS, NUM_WORDS))
    weights = 1.0 / np.arange(1, _TOPIC_WORDS + 1) ** 0.7
    for t in range(NUM_TOPICS):
        words = rng.choice(np.arange(_COMMON_WORDS, NUM_WORDS), size=_TOPIC_WORDS, replace=False)
        topics[t, words] = rng.permutation(weights)
    topics /= topics.sum(axis=1, keepdims=True)
    return background, topics


_BACKGROUND, _TOPICS = _world()

# Topic priors skewed like Reuters's (a few topics hold most newswires), but with every topic
# frequent enough to appear in each split of a few thousand documents.
TOPIC_PRIOR = 1.0 / np.arange(1, NUM_TOPICS + 1) ** 0.6
TOPIC_PRIOR = TOPIC_PRIOR / TOPIC_PRIOR.sum()


def render_documents(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Word presence (n, 1000) float32 0/1 for documents of the given topics."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    own = rng.beta(2.0, 5.0, size=n)  # share of the document's own topic words, mean ~0.29
    other_topic = rng.integers(0, NUM_TOPICS, size=n)
    other = np.where(rng.uniform(size=n) < 0.35, rng.beta(2.0, 8.0, size=n), 0.0)
    probs = (
        (1 - own - other)[:, None] * _BACKGROUND[None]
        + own[:, None] * _TOPICS[labels]
        + other[:, None] * _TOPICS[other_topic]
    )
    length = np.clip(rng.lognormal(np.log(90.0), 0.55, size=n), 15, 500)
    # A word is present when drawn at least once among `length` tokens.
    present = 1.0 - np.power(1.0 - probs, length[:, None])
    return (rng.uniform(size=probs.shape) < present).astype(np.float32)
