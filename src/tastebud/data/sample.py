"""The built-in sample: a small music store, generated in code (no files, no downloads).

About 300 listeners rate 60 albums from eight styles. Each listener has one or two favourite
styles and rates albums of those styles higher and more often, so a model that learns tastes
beats popularity -- enough structure for the demo and fast tests, small enough to fit in a
blink.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset

#: (album, artist, year, style)
ALBUMS: tuple[tuple[str, str, int, str], ...] = (
    ("Origin of Symmetry", "Muse", 2001, "rock"),
    ("OK Computer", "Radiohead", 1997, "rock"),
    ("Nevermind", "Nirvana", 1991, "rock"),
    ("The Dark Side of the Moon", "Pink Floyd", 1973, "rock"),
    ("Abbey Road", "The Beatles", 1969, "rock"),
    ("Is This It", "The Strokes", 2001, "rock"),
    ("AM", "Arctic Monkeys", 2013, "rock"),
    ("Kind of Blue", "Miles Davis", 1959, "jazz"),
    ("A Love Supreme", "John Coltrane", 1965, "jazz"),
    ("Time Out", "The Dave Brubeck Quartet", 1959, "jazz"),
    ("Mingus Ah Um", "Charles Mingus", 1959, "jazz"),
    ("Head Hunters", "Herbie Hancock", 1973, "jazz"),
    ("The Epic", "Kamasi Washington", 2015, "jazz"),
    ("The Freewheelin' Bob Dylan", "Bob Dylan", 1963, "folk"),
    ("Blue", "Joni Mitchell", 1971, "folk"),
    ("Pink Moon", "Nick Drake", 1972, "folk"),
    ("For Emma, Forever Ago", "Bon Iver", 2007, "folk"),
    ("Carrie & Lowell", "Sufjan Stevens", 2015, "folk"),
    ("Fleet Foxes", "Fleet Foxes", 2008, "folk"),
    ("Discovery", "Daft Punk", 2001, "electronic"),
    ("Selected Ambient Works 85-92", "Aphex Twin", 1992, "electronic"),
    ("Homogenic", "Björk", 1997, "electronic"),
    ("Music Has the Right to Children", "Boards of Canada", 1998, "electronic"),
    ("Untrue", "Burial", 2007, "electronic"),
    ("Random Access Memories", "Daft Punk", 2013, "electronic"),
    ("Mezzanine", "Massive Attack", 1998, "electronic"),
    ("Illmatic", "Nas", 1994, "hip-hop"),
    ("To Pimp a Butterfly", "Kendrick Lamar", 2015, "hip-hop"),
    ("The Miseducation of Lauryn Hill", "Lauryn Hill", 1998, "hip-hop"),
    ("Madvillainy", "Madvillain", 2004, "hip-hop"),
    ("Enter the Wu-Tang (36 Chambers)", "Wu-Tang Clan", 1993, "hip-hop"),
    ("My Beautiful Dark Twisted Fantasy", "Kanye West", 2010, "hip-hop"),
    ("Thriller", "Michael Jackson", 1982, "pop"),
    ("Rumours", "Fleetwood Mac", 1977, "pop"),
    ("Purple Rain", "Prince", 1984, "pop"),
    ("1989", "Taylor Swift", 2014, "pop"),
    ("Melodrama", "Lorde", 2017, "pop"),
    ("Back to Black", "Amy Winehouse", 2006, "pop"),
    ("Goldberg Variations (1981)", "Glenn Gould", 1982, "classical"),
    ("The Four Seasons", "Academy of St Martin in the Fields", 1970, "classical"),
    ("Symphony No. 9", "Berlin Philharmonic", 1963, "classical"),
    ("Cello Suites", "Yo-Yo Ma", 1983, "classical"),
    ("Music for 18 Musicians", "Steve Reich", 1978, "classical"),
    ("Spiegel im Spiegel", "Arvo Pärt", 1999, "classical"),
    ("Master of Puppets", "Metallica", 1986, "metal"),
    ("Paranoid", "Black Sabbath", 1970, "metal"),
    ("Rust in Peace", "Megadeth", 1990, "metal"),
    ("Reign in Blood", "Slayer", 1986, "metal"),
    ("Leviathan", "Mastodon", 2004, "metal"),
    ("Blackwater Park", "Opeth", 2001, "metal"),
    ("Black Holes and Revelations", "Muse", 2006, "rock"),
    ("In Rainbows", "Radiohead", 2007, "rock"),
    ("Blonde", "Frank Ocean", 2016, "pop"),
    ("Kid A", "Radiohead", 2000, "electronic"),
    ("Moanin'", "Art Blakey & The Jazz Messengers", 1958, "jazz"),
    ("Bringing It All Back Home", "Bob Dylan", 1965, "folk"),
    ("Dummy", "Portishead", 1994, "electronic"),
    ("The Low End Theory", "A Tribe Called Quest", 1991, "hip-hop"),
    ("Ride the Lightning", "Metallica", 1984, "metal"),
    ("Clair de Lune and Other Piano Works", "Claudio Arrau", 1991, "classical"),
)
CITIES = ("Berlin", "London", "New York", "São Paulo", "Tokyo", "Stockholm", "Lagos", "Madrid")


def load_sample(n_users: int = 300, *, seed: int = 7) -> Dataset:
    """The music-store sample: listeners (age, gender, city), albums (artist, year, style)
    and 1-5 star ratings with timestamps.

    Album ids are their titles; user ids are ``"u001"``, ``"u002"``... so both string and
    readable ids are exercised.
    """
    rng = np.random.default_rng(seed)
    albums = pd.DataFrame(ALBUMS, columns=["album", "artist", "year", "style"])
    styles = np.array(sorted(set(albums["style"])), dtype=object)
    style_of = albums["style"].map({s: i for i, s in enumerate(styles)}).to_numpy()
    appeal = rng.normal(0.0, 0.4, len(albums))

    users = pd.DataFrame(
        {
            "user": [f"u{i + 1:03d}" for i in range(n_users)],
            "age": rng.integers(16, 72, n_users),
            "gender": rng.choice(
                np.array(["F", "M", "X"], dtype=object), n_users, p=[0.48, 0.48, 0.04]
            ),
            "city": rng.choice(np.array(CITIES, dtype=object), n_users),
        }
    )
    favourite = rng.integers(0, len(styles), (n_users, 2))
    second = rng.random(n_users) < 0.5  # half the listeners have a second favourite style
    rows: list[tuple[str, str, float, float]] = []
    start = 1_704_067_200.0  # 2024-01-01
    for u in range(n_users):
        liked = {favourite[u, 0]} | ({favourite[u, 1]} if second[u] else set())
        in_taste = np.isin(style_of, list(liked))
        propensity = np.where(in_taste, 0.55, 0.06) * np.exp(appeal)
        chosen = np.flatnonzero(rng.random(len(albums)) < propensity)
        if len(chosen) == 0:
            chosen = rng.choice(np.flatnonzero(in_taste), 1)
        times = np.sort(start + rng.random(len(chosen)) * 365 * 86_400)
        for album, t in zip(rng.permutation(chosen), times, strict=True):
            score = 2.5 + 1.6 * in_taste[album] + appeal[album] + rng.normal(0.0, 0.6)
            rows.append(
                (users["user"][u], ALBUMS[album][0], float(np.clip(np.rint(score), 1, 5)), t)
            )
    ratings = pd.DataFrame(rows, columns=["user", "album", "rating", "timestamp"])
    return Dataset.from_frame(
        ratings,
        user="user",
        item="album",
        rating="rating",
        timestamp="timestamp",
        users=users,
        items=albums,
        rating_range=(1, 5),
        name="music-store",
    )
