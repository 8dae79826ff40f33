"""Write the bundled instruction-following task (the embedded default's prompts).

Run ``python scripts/make_instruction_task.py`` to regenerate
``arena_stream/data/instructions.jsonl`` (the training prompts, played in
shards) and ``arena_stream/data/instructions-heldout.jsonl`` (the held-out set
every target version is evaluated on). Both are written by this team: one short
fact per topic, asked for with one verifiable instruction. Every prompt
declares its check in ``metadata.checks`` (read by the verifier judge) and
carries ``metadata.reference``, a compliant answer (played by the reference
player). Held-out topics never appear in the training prompts, so the
evaluation measures whether the target learned to follow the instructions,
not whether it memorised answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (topic, one fact about it in at most ten words). Written for this task.
FACTS: list[tuple[str, str]] = [
    ("the moon", "The moon reflects sunlight and orbits the Earth."),
    ("honeybees", "Honeybees make honey from the nectar of flowers."),
    ("volcanoes", "Volcanoes erupt when molten rock escapes from underground."),
    ("penguins", "Penguins cannot fly but swim very well."),
    ("the Sahara", "The Sahara is a huge hot desert in Africa."),
    ("rainbows", "Rainbows appear when sunlight passes through raindrops."),
    ("whales", "Whales are mammals that breathe air through blowholes."),
    ("bread", "Bread is baked from flour, water and yeast."),
    ("the heart", "The heart pumps blood through the whole body."),
    ("lighthouses", "Lighthouses guide ships safely along dark coasts."),
    ("bicycles", "Bicycles turn the push of pedals into motion."),
    ("owls", "Owls hunt at night and see well in darkness."),
    ("glaciers", "Glaciers are slow rivers of ice on land."),
    ("coffee", "Coffee is brewed from roasted coffee beans."),
    ("thunder", "Thunder is the sound made by lightning heating air."),
    ("octopuses", "Octopuses have eight arms and three hearts."),
    ("maple trees", "Maple trees give the sap used for maple syrup."),
    ("the Pacific Ocean", "The Pacific is the largest ocean on Earth."),
    ("camels", "Camels store fat in their humps for long journeys."),
    ("libraries", "Libraries lend books to people for free."),
    ("snowflakes", "Snowflakes are ice crystals that usually have six sides."),
    ("tomatoes", "Tomatoes are fruits that grow on vines."),
    ("the sun", "The sun is a star at the centre of our system."),
    ("dolphins", "Dolphins are clever mammals that live in groups."),
    ("compasses", "A compass needle points toward magnetic north."),
    ("bamboo", "Bamboo is a grass that can grow very fast."),
    ("elephants", "Elephants are the largest animals living on land."),
    ("clocks", "Clocks measure time in hours, minutes and seconds."),
    ("the Nile", "The Nile is a long river flowing through Egypt."),
    ("frogs", "Frogs start life as tadpoles living in water."),
    ("salt", "Salt is often taken from seawater by evaporation."),
    ("wind turbines", "Wind turbines turn moving air into electricity."),
    ("spiders", "Spiders spin silk webs to catch insects."),
    ("chess", "Chess is a strategy game played on sixty-four squares."),
    ("the Eiffel Tower", "The Eiffel Tower is an iron tower in Paris."),
    ("butterflies", "Butterflies begin life as caterpillars."),
    ("cheese", "Cheese is made by curdling and aging milk."),
    ("earthquakes", "Earthquakes happen when rocks suddenly shift underground."),
    ("kangaroos", "Kangaroos carry their young in a pouch."),
    ("the piano", "A piano makes sound when hammers strike strings."),
    ("tides", "Tides are caused mostly by the pull of the moon."),
    ("rice", "Rice is a grain grown in flooded fields."),
    ("sharks", "Sharks have skeletons made of cartilage, not bone."),
    ("deserts", "Deserts receive very little rain each year."),
    ("vaccines", "Vaccines train the body to fight certain diseases."),
    ("trains", "Trains run on rails and can carry heavy loads."),
    ("sunflowers", "Young sunflowers turn to follow the sun."),
    ("the Amazon rainforest", "The Amazon rainforest is home to countless species."),
    ("ants", "Ants live in colonies led by a queen."),
    ("chocolate", "Chocolate is made from the seeds of cacao trees."),
    ("mountains", "Mountains form when pieces of the crust push together."),
    ("bats", "Bats are the only mammals that can truly fly."),
    ("paper", "Paper is usually made from wood pulp."),
    ("the stomach", "The stomach uses acid to break down food."),
    ("parrots", "Some parrots can copy human speech."),
    ("icebergs", "Most of an iceberg is hidden below the water."),
    ("gardens", "Gardens need sunlight, water and good soil."),
    ("airplanes", "Airplanes fly because their wings create lift."),
    ("turtles", "Turtles carry a hard shell on their backs."),
    ("magnets", "Magnets pull on iron and other magnetic metals."),
    ("the violin", "The violin is played by drawing a bow across strings."),
    ("coral reefs", "Coral reefs are built by tiny sea animals."),
    ("apples", "Apples grow on trees and come in many varieties."),
    ("rain", "Rain falls when water droplets in clouds grow heavy."),
    # held-out topics (never in the training prompts)
    ("zebras", "Zebras have black and white stripes."),
    ("the Moon landing", "Astronauts first walked on the moon in 1969."),
    ("honey", "Honey can last for a very long time."),
    ("telescopes", "Telescopes make distant objects look closer."),
    ("lemons", "Lemons are sour citrus fruits rich in vitamin C."),
    ("giraffes", "Giraffes are the tallest animals in the world."),
    ("the Arctic", "The Arctic is a cold region around the North Pole."),
    ("candles", "Candles give light by burning wax through a wick."),
    ("foxes", "Foxes are small wild relatives of dogs."),
    ("the brain", "The brain controls thinking, memory and movement."),
    ("rivers", "Rivers carry fresh water from land to the sea."),
    ("pumpkins", "Pumpkins are large orange squashes that grow on vines."),
    ("eagles", "Eagles are birds of prey with sharp eyesight."),
    ("soap", "Soap helps water wash away dirt and grease."),
    ("the guitar", "A guitar usually has six strings."),
    ("caves", "Caves are often carved by water dissolving rock."),
]

HELDOUT_FROM = 64  # FACTS[64:] are the held-out topics

ENDINGS = ["That is all.", "Thank you for asking.", "I hope this helps."]
OPENERS = ["Indeed", "Certainly", "Notably"]


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text and not text.startswith(("I ", "A ")) else text


def variant(kind: int, fact: str, n: int) -> tuple[str, list[dict[str, Any]], str]:
    """(instruction, checks, reference answer) of instruction kind ``kind``."""
    if kind == 0:
        return ("Reply in all capital letters.", [{"check": "case", "mode": "upper"}],
                fact.upper())
    if kind == 1:
        return ("Wrap your entire reply in double quotation marks.", [{"check": "quoted"}],
                f'"{fact}"')
    if kind == 2:
        word = OPENERS[n % len(OPENERS)]
        return (f"Begin your reply with the word {word}.",
                [{"check": "starts_with", "text": word}],
                f"{word}, {_lower_first(fact)}")
    if kind == 3:
        ending = ENDINGS[n % len(ENDINGS)]
        return (f"End your reply with the exact sentence: {ending}",
                [{"check": "ends_with", "text": ending}], f"{fact} {ending}")
    if kind == 4:
        return ("Answer in at most 12 words.", [{"check": "words", "max": 12}], fact)
    return ("Reply in all lowercase letters.", [{"check": "case", "mode": "lower"}],
            fact.lower())


KINDS = 6


def prompt(pid: str, topic: str, fact: str, kind: int, n: int) -> dict[str, Any]:
    instruction, checks, reference = variant(kind, fact, n)
    return {
        "id": pid,
        "category": "instructions",
        "prompt": f"Tell me one fact about {topic}. {instruction}",
        "metadata": {"checks": checks, "reference": reference, "instruction": kind},
    }


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train_topics, heldout_topics = FACTS[:HELDOUT_FROM], FACTS[HELDOUT_FROM:]
    train = []
    # Two instructions per training topic (different kinds), shuffled deterministically
    # so that each shard holds every kind.
    for i, (topic, fact) in enumerate(train_topics):
        for j in range(2):
            kind = (i + 3 * j) % KINDS
            train.append(prompt(f"if-{i:03d}-{j}", topic, fact, kind, i + j))
    order = sorted(range(len(train)), key=lambda k: (k * 37) % len(train))
    train = [train[k] for k in order]
    heldout = [prompt(f"heldout-{i:03d}-{j}", topic, fact, (i + 3 * j) % KINDS, i + j)
               for i, (topic, fact) in enumerate(heldout_topics) for j in range(2)]
    return train, heldout


def main() -> None:
    data = Path(__file__).resolve().parent.parent / "arena_stream" / "data"
    train, heldout = build()
    for name, rows in (("instructions.jsonl", train), ("instructions-heldout.jsonl", heldout)):
        with (data / name).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
