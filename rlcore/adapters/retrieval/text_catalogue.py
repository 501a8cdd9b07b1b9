"""A small real-text catalogue: product texts in 28 aspects and shopping intents, all embedded by MiniLM.

Every item is a short product text composed from its aspect's nouns and a shared stock of qualities and uses
("a waterproof two-person tent for alpine weekends"), every intent a sentence a user might type ("everything
for a weekend camping trip"), and both are embedded by the real all-MiniLM-L6-v2 sentence encoder
(:mod:`rlcore.adapters.text`, the ``text`` extra, read offline). The ground truth is known by construction,
so coverage stays exact: an item is relevant to an intent when its aspect is one of the intent's four. Seven
intents stay inside one domain (camping, cooking, ...), eleven mix domains ("cooking meals at the campsite"),
which is where a single query at the intent leans to one aspect and a fan-out has to find the others. A
fan-out policy needs a few hundred training intents to generalise, so ``num_intents`` beyond the 18 are
requests composed from four aspect names ("help me find tents plus spices, monitors and nappies").

``dim=None`` keeps MiniLM's 384 dimensions; an integer projects items, centres and intents together on the
items' top principal directions (:func:`~rlcore.adapters.text.pca_project` of the stacked embeddings), which
keeps their neighbourhoods and makes the fan-out policy and the denoiser smaller.
"""

from __future__ import annotations

import itertools

import torch

from rlcore.adapters.retrieval.catalogue import Catalogue, CatalogueConfig
from rlcore.adapters.retrieval.index import IndexConfig, VectorIndex

ASPECTS: dict[str, tuple[str, ...]] = {
    # camping
    "tents": ("tent", "backpacking tent", "dome tent", "camping shelter"),
    "sleeping bags": ("sleeping bag", "mummy sleeping bag", "down sleeping bag", "sleeping pad"),
    "camping stoves": ("camping stove", "backpacking stove", "gas burner for camping", "portable camp stove"),
    "headlamps": ("headlamp", "rechargeable head torch", "LED headlamp", "camping lantern"),
    # cooking
    "chef knives": ("chef's knife", "santoku knife", "kitchen knife set", "paring knife"),
    "cast iron pans": ("cast iron skillet", "cast iron frying pan", "dutch oven", "griddle pan"),
    "spices": ("spice blend", "smoked paprika", "curry powder", "herb seasoning mix"),
    "baking gear": ("baking sheet", "cake tin", "silicone baking mat", "loaf pan"),
    # fitness
    "running shoes": ("running shoes", "trail running shoes", "road running trainers", "marathon racing shoes"),
    "yoga mats": ("yoga mat", "non-slip exercise mat", "cork yoga mat", "pilates mat"),
    "dumbbells": ("dumbbell set", "adjustable dumbbells", "kettlebell", "weight plates"),
    "fitness trackers": ("fitness tracker", "GPS running watch", "heart rate monitor", "smart fitness band"),
    # home office
    "office chairs": ("office chair", "ergonomic desk chair", "mesh task chair", "lumbar support chair"),
    "standing desks": ("standing desk", "sit-stand desk", "height-adjustable desk", "desk converter"),
    "monitors": ("computer monitor", "4K monitor", "ultrawide display", "portable USB-C monitor"),
    "headphones": ("noise-cancelling headphones", "wireless headset", "over-ear headphones", "earbuds with mic"),
    # travel
    "suitcases": ("carry-on suitcase", "hard-shell suitcase", "rolling luggage", "travel duffel bag"),
    "travel adapters": ("universal travel adapter", "plug converter", "travel power bank", "USB travel charger"),
    "neck pillows": ("travel neck pillow", "memory foam neck pillow", "sleep mask for flights", "inflatable pillow"),
    "packing cubes": ("packing cubes", "compression packing bags", "toiletry bag", "travel organiser pouch"),
    # gardening
    "seeds": ("vegetable seeds", "tomato seed packet", "herb seed kit", "wildflower seed mix"),
    "pruning tools": ("pruning shears", "secateurs", "hedge trimmer", "garden loppers"),
    "watering": ("watering can", "garden hose", "drip irrigation kit", "hose spray nozzle"),
    "compost": ("compost bin", "worm composter", "kitchen compost caddy", "organic compost"),
    # baby
    "strollers": ("baby stroller", "jogging stroller", "lightweight pushchair", "travel system pram"),
    "baby monitors": ("baby monitor", "video baby monitor", "audio baby monitor", "smart sleep monitor"),
    "car seats": ("infant car seat", "convertible car seat", "booster seat", "isofix car seat"),
    "nappies": ("nappies", "reusable cloth nappies", "nappy bag", "baby wipes"),
}
"""Each aspect's product nouns (the aspect is the ground-truth relevance label of its items)."""

QUALITIES = ("lightweight", "durable", "budget", "premium", "compact", "waterproof", "eco-friendly",
             "beginner-friendly", "professional-grade", "foldable")
USES = ("for everyday use", "for weekends away", "for small spaces", "for families", "for long trips",
        "that lasts for years", "with a two-year warranty", "rated best value")

INTENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("everything for a weekend camping trip", ("tents", "sleeping bags", "camping stoves", "headlamps")),
    ("getting started with cooking at home", ("chef knives", "cast iron pans", "spices", "baking gear")),
    ("starting a home workout routine", ("yoga mats", "dumbbells", "fitness trackers", "running shoes")),
    ("setting up a comfortable home office", ("office chairs", "standing desks", "monitors", "headphones")),
    ("packing for a long-haul flight", ("suitcases", "travel adapters", "neck pillows", "packing cubes")),
    ("starting a vegetable garden", ("seeds", "pruning tools", "watering", "compost")),
    ("getting ready for a new baby", ("strollers", "baby monitors", "car seats", "nappies")),
    ("cooking meals at the campsite", ("camping stoves", "cast iron pans", "spices", "chef knives")),
    ("training for my first marathon", ("running shoes", "fitness trackers", "headphones", "yoga mats")),
    ("a backpacking trip around Asia", ("packing cubes", "travel adapters", "sleeping bags", "headlamps")),
    ("working remotely while travelling", ("travel adapters", "headphones", "monitors", "suitcases")),
    ("a family road trip with a toddler", ("car seats", "strollers", "packing cubes", "neck pillows")),
    ("growing and cooking my own herbs", ("seeds", "watering", "spices", "chef knives")),
    ("staying fit while working from home", ("standing desks", "yoga mats", "dumbbells", "office chairs")),
    ("a quiet night-time routine for the nursery", ("baby monitors", "nappies", "headlamps", "headphones")),
    ("an outdoor weekend of hiking and gardening", ("running shoes", "tents", "pruning tools", "compost")),
    ("baking bread with home-grown ingredients", ("baking gear", "seeds", "compost", "cast iron pans")),
    ("travelling light for a work conference", ("suitcases", "packing cubes", "headphones", "fitness trackers")),
)
"""The hand-written intents: each one's text and the four aspects it owns."""

REQUESTS = ("I'm looking for {}, {}, {} and {}", "help me find {} plus {}, {} and {}",
            "shopping list: {}, {}, {}, {}", "gift ideas among {}, {}, {} or {}",
            "what are good {}, {}, {} and {} to buy", "compare {}, {}, {} and {} for me")
"""Templates of the composed intents (a request naming four aspects)."""


def item_texts(items_per_aspect: int, seed: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """``(texts, aspect ids)``: ``items_per_aspect`` distinct product texts per aspect, drawn from the seed."""
    g = torch.Generator().manual_seed(int(seed))
    texts, aspect = [], []
    for a, nouns in enumerate(ASPECTS.values()):
        combos = list(itertools.product(QUALITIES, nouns, USES))
        if items_per_aspect > len(combos):
            raise ValueError(f"items_per_aspect must be at most {len(combos)} (distinct texts per aspect), got "
                             f"{items_per_aspect}.")
        for i in torch.randperm(len(combos), generator=g)[:items_per_aspect].tolist():
            quality, noun, use = combos[i]
            article = "an" if quality[0] in "aeiou" else "a"
            texts.append(f"{article} {quality} {noun} {use}")
            aspect.append(a)
    return tuple(texts), torch.tensor(aspect)


def composed_intents(count: int, seed: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``count`` requests naming four distinct aspects each, all aspect sets distinct from each other and from
    the hand-written intents'."""
    g = torch.Generator().manual_seed(int(seed) + 2)
    names = list(ASPECTS)
    seen = {frozenset(owned) for _, owned in INTENTS}
    out: list[tuple[str, tuple[str, ...]]] = []
    while len(out) < count:
        owned = tuple(names[i] for i in torch.randperm(len(names), generator=g)[:4].tolist())
        template = REQUESTS[int(torch.randint(len(REQUESTS), (1,), generator=g))]
        if frozenset(owned) not in seen:
            seen.add(frozenset(owned))
            out.append((template.format(*owned), owned))
    return tuple(out)


def text_catalogue(items_per_aspect: int = 60, num_intents: int = 300, dim: int | None = 64,
                   test_fraction: float = 0.25, seed: int = 0, *, index: IndexConfig | None = None) -> Catalogue:
    """The real-text :class:`~rlcore.adapters.retrieval.catalogue.Catalogue` (see the module docstring).

    Args:
        items_per_aspect: product texts per aspect (28 aspects; at most 320).
        num_intents: intents: the 18 hand-written ones, then requests composed from four aspect names each
            (a fan-out policy needs a few hundred training intents to generalise to unseen ones).
        dim: embedding size: None for MiniLM's 384, else a PCA projection (see the module docstring).
        test_fraction: share of the intents held out for testing.
        seed: seed of the item texts and of the train/test split.
        index: the index over the items (default exact).

    The catalogue also carries ``item_texts`` and ``intent_texts`` (tuples of strings, aligned with ``items``
    and ``intents``).
    """
    if not isinstance(items_per_aspect, int) or items_per_aspect < 1:
        raise ValueError(f"items_per_aspect must be an integer >= 1, got {items_per_aspect!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    from rlcore.adapters.text import embed_texts, pca_project

    if not isinstance(num_intents, int) or not 2 <= num_intents <= 10_000:
        raise ValueError(f"num_intents must be an integer in [2, 10000], got {num_intents!r}.")
    texts, item_aspect = item_texts(items_per_aspect, seed)
    names = list(ASPECTS)
    intents_owned = (INTENTS + composed_intents(max(0, num_intents - len(INTENTS)), seed))[:num_intents]
    intent_texts = tuple(text for text, _ in intents_owned)
    intent_aspects = torch.zeros(num_intents, len(ASPECTS), dtype=torch.bool)
    for q, (_, owned) in enumerate(intents_owned):
        intent_aspects[q, [names.index(a) for a in owned]] = True
    purpose, alternative = "retrieval.text_catalogue", ", or use retrieval.synthetic_catalogue"
    items = embed_texts(texts, purpose, alternative)
    intents = embed_texts(intent_texts, purpose, alternative)
    if dim is not None:
        both = pca_project(torch.cat([items, intents]), dim)
        items, intents = both[:len(texts)], both[len(texts):]
    centres = torch.stack([items[item_aspect == a].mean(0) for a in range(len(ASPECTS))])
    centres = centres / centres.norm(dim=1, keepdim=True).clamp(min=1e-12)
    g = torch.Generator().manual_seed(int(seed) + 1)
    order = torch.randperm(num_intents, generator=g)
    num_test = max(1, min(num_intents - 1, round(test_fraction * num_intents)))
    test, train = order[:num_test].sort().values, order[num_test:].sort().values
    config = CatalogueConfig(num_items=len(texts), num_clusters=len(ASPECTS), num_intents=num_intents,
                             dim=int(items.shape[1]), clusters_per_intent=4, test_fraction=test_fraction, seed=seed)
    return Catalogue(config, items, item_aspect, centres, intents, intent_aspects, train, test,
                     VectorIndex(items, index), item_texts=texts, intent_texts=intent_texts)


__all__ = ["ASPECTS", "INTENTS", "REQUESTS", "composed_intents", "item_texts", "text_catalogue"]
