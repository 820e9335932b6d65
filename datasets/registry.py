"""The real-data registry: every observed file lensbench uses, by name, with its public origin and
sha256.

The table is data (``data_registry.json`` beside this module), generated once from the mirror's
``SHA256SUMS`` and ``SOURCE.txt`` files by :func:`build_registry_table`. A file's name is its path
inside the data directory, e.g. ``"cosmos_hst_f814w/real_galaxy_images_extension.fits"``.

Where files come from (``fetch``):

* ``$LENSBENCH_DATA_DIR`` set: a local mirror with the same layout (developers and CI use
  ``../shared/data``). Nothing is downloaded; the file is read from the mirror and its sha256
  checked against the registry.
* otherwise: pooch downloads the file once from its origin (a raw GitHub URL at the pinned
  commit) into ``$LENSBENCH_CACHE_DIR`` (default: the OS cache directory ``lensbench``) and
  checks the same sha256. Files without a public origin (derived tables) need the mirror.
  With ``$LENSBENCH_NO_DOWNLOAD=1`` (the test suite sets it) only a file already in the cache is
  used; nothing is downloaded.

A missing or corrupt file is an error (:class:`DataFileError`) that names the file, the expected
sha256 and the place that was searched.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from importlib import resources
from pathlib import Path

from lensbench.datasets.files import atomic_write_text
from lensbench.datasets.storage import sha256_file

DATA_DIR_ENV = "LENSBENCH_DATA_DIR"
CACHE_DIR_ENV = "LENSBENCH_CACHE_DIR"
NO_DOWNLOAD_ENV = "LENSBENCH_NO_DOWNLOAD"
REGISTRY_FILE = "data_registry.json"

# Origins of the mirror's folders: repository, pinned commit, how a mirror path maps to the path in
# that repository, licence. Transcribed from the folders' SOURCE.txt files (which
# build_registry_table checks for the commit). ``path`` maps the file's path inside the folder to
# its path in the repository; None: no downloadable origin (a derived file), mirror only.
_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
_ORIGINS = {
    "cosmos_hst_f814w": {
        "repo": "LSSTDESC/BlendingToolKit",
        "commit": "6901e8ce5d2d3f19bf5e1b7463e26332fce816fd",
        "path": lambda rel: f"data/cosmos/{rel}",
        "licence": "MIT (BlendingToolKit); pixels: HST/ACS COSMOS, public NASA/STScI data",
    },
    "aegis_hst_2band": {
        "repo": "GalSim-developers/GalSim",
        "commit": "ee177aa50424dbbc5cec4a71cadd6297109c2aa1",
        "path": lambda rel: f"tests/real_comparison_images/{rel}",
        "licence": "GalSim BSD-style; pixels: HST/ACS AEGIS, public NASA/STScI data",
    },
    "psf_des_psfex": {
        "repo": "GalSim-developers/GalSim",
        "commit": "ee177aa50424dbbc5cec4a71cadd6297109c2aa1",
        "path": lambda rel: f"tests/des_data/{rel}",
        "licence": "GalSim BSD-style; data: Dark Energy Survey DECam exposure 154912",
    },
    "slacs_hst_f814w": {
        "repo": "phdenzel/slacs-match",
        "commit": "d02fd4ae30cd919b8181b63987373f841c233a44",
        "path": lambda rel: {"tinytim_ACS.fits": "psf/tinytim_ACS.fits",
                             "slacs_params.csv": "slacs_params.csv"}.get(
            rel, "data/" + rel.removeprefix("99x99/")),
        "licence": "GPL-3.0 (slacs-match); pixels: HST/ACS F814W from the Hubble Legacy Archive",
    },
    "photoz_sdss_boss_dr10": {
        "repo": "IftachSadeh/ANNZ",
        "commit": "dd4ed16d33877d619b90dcab738ea37d631e3dce",
        "path": lambda rel: f"examples/data/photoZ/{rel}",
        "licence": "GPL-3.0 (ANNZ); data: SDSS-III BOSS DR10",
    },
    "photoz_sdss_mgs": {
        "repo": "mgckind/MLZ",
        "commit": "c3d6d0031592eee26e0c965b302e56964bd4fd35",
        "path": lambda rel: f"mlz/test/{rel}",
        "licence": "University of Illinois/NCSA Open Source License (MLZ); data: SDSS MGS",
    },
}
# Files of known_lens_tables/ come from two repositories (see SOURCE_*.txt there).
_FILE_ORIGINS = {
    "known_lens_tables/sugohi3_summary_table.txt": {
        "repo": "astrosonnen/sugohi3_inference",
        "commit": "b21a66a1eaac5666eafa610be9457e764ee6d822",
        "path": "summary_table.txt",
        "licence": "none stated (values: Sonnenfeld et al. 2019, A&A 630, A71)",
    },
    "known_lens_tables/slacs_auger2010_shajib2021.csv": {
        "repo": "amyetherington/AutolensSlacs",
        "commit": "2e3fcdccec413dd92464fd4bb6b25a210ca0025a",
        "path": None,  # a CSV export of slacs_data_table.xlsx there: not downloadable as is
        "derived_from": "slacs_data_table.xlsx",
        "licence": "none stated (values: Bolton+2008, Auger+2009/2010, Shajib+2021)",
    },
}


class DataFileError(FileNotFoundError):
    """A registered data file is missing, corrupt or unknown."""


def build_registry_table(shared_dir: str | os.PathLike, out: str | os.PathLike | None = None
                         ) -> dict:
    """Build the registry table from a mirror (``SHA256SUMS`` + ``SOURCE*.txt``) and write it as
    JSON to ``out`` (default: ``data_registry.json`` beside this module). Returns the table.

    Run once when the mirror changes: ``python -c "from lensbench.datasets.registry import
    build_registry_table as b; b('../shared/data')"``."""
    shared = Path(shared_dir)
    files = {}
    for line in (shared / "SHA256SUMS").read_text().splitlines():
        if not line.strip():
            continue
        digest, rel = line.split(maxsplit=1)
        name = rel.strip().removeprefix("./")
        folder, _, inner = name.partition("/")
        entry = {"sha256": digest.lower(), "size": (shared / name).stat().st_size}
        spec = _FILE_ORIGINS.get(name) or _ORIGINS.get(folder)
        is_doc = re.fullmatch(r"SOURCE(_\w+)?\.txt", Path(name).name) is not None
        if spec is None or is_doc:
            # SOURCE*.txt are the mirror's own provenance notes: no public origin.
            entry |= {"url": None, "origin": "lensbench data mirror (provenance note)",
                      "licence": "provenance note written for the mirror"}
        else:
            path = spec["path"](inner) if callable(spec["path"]) else spec["path"]
            source_txt = _source_text(shared, folder)
            if spec["commit"] not in source_txt:
                raise ValueError(f"{name}: commit {spec['commit']} not found in the SOURCE "
                                 f"file(s) of {folder}/; update _ORIGINS")
            if path is None:
                entry["url"] = None
                entry["origin"] = (f"{spec['repo']}@{spec['commit']}: derived from "
                                   f"{spec['derived_from']} (mirror only)")
            else:
                entry["url"] = _RAW.format(repo=spec["repo"], commit=spec["commit"], path=path)
                entry["origin"] = f"{spec['repo']}@{spec['commit']}:{path}"
            entry["licence"] = spec["licence"]
        files[name] = entry
    table = {"_doc": "lensbench real-data registry: name (path in the data directory) -> sha256, "
                     "size, origin URL (None: mirror only), licence. Generated by "
                     "lensbench.datasets.registry.build_registry_table from the mirror's "
                     "SHA256SUMS and SOURCE.txt files; do not edit by hand.",
             "files": dict(sorted(files.items()))}
    target = Path(out) if out is not None else Path(__file__).with_name(REGISTRY_FILE)
    atomic_write_text(target, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table


def _source_text(shared: Path, folder: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((shared / folder).glob(
        "SOURCE*.txt")))


@cache
def _table() -> dict[str, dict]:
    text = resources.files("lensbench.datasets").joinpath(REGISTRY_FILE).read_text()
    return json.loads(text)["files"]


def names(prefix: str = "") -> list[str]:
    """Registered file names (optionally only those starting with ``prefix``, e.g. a folder)."""
    return [name for name in _table() if name.startswith(prefix)]


def _entry(name: str) -> dict:
    table = _table()
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, table, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataFileError(f"{name!r} is not a registered data file.{hint} "
                            f"Registered: {len(table)} files (lensbench.datasets.registry.names())")
    return table[name]


def describe(name: str) -> dict:
    """``{"name", "origin", "url", "sha256", "size", "licence"}`` of a registered file."""
    entry = _entry(name)
    return {"name": name, "origin": entry["origin"], "url": entry["url"],
            "sha256": entry["sha256"], "size": entry["size"], "licence": entry["licence"]}


def data_dir() -> Path | None:
    """The local mirror named by ``$LENSBENCH_DATA_DIR``, or None."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _cache_dir() -> Path:
    value = os.environ.get(CACHE_DIR_ENV)
    if value:
        return Path(value).expanduser()
    import pooch

    return Path(pooch.os_cache("lensbench"))


def _cache_path(name: str) -> Path:
    return _cache_dir() / name.replace("/", "__")


def downloads_allowed() -> bool:
    return os.environ.get(NO_DOWNLOAD_ENV, "") in ("", "0")


def local_path(name: str) -> Path | None:
    """Where ``fetch(name)`` would read the file without a download (the mirror when
    ``$LENSBENCH_DATA_DIR`` is set, else the download cache), or None when it is not there.
    Checks presence only (``fetch`` verifies the sha256)."""
    _entry(name)
    mirror = data_dir()
    path = mirror / name if mirror is not None else _cache_path(name)
    return path if path.is_file() else None


def how_to_get(name: str) -> str:
    """One sentence: how to make the registered file ``name`` available."""
    entry = _entry(name)
    mirror = data_dir()
    if mirror is not None:
        return f"${DATA_DIR_ENV}={mirror} lacks it: point ${DATA_DIR_ENV} at a complete mirror"
    if entry["url"] is None:
        return f"it has no public origin: set ${DATA_DIR_ENV} to a data mirror that holds it"
    return (f"set ${DATA_DIR_ENV} to a data mirror, or download it once into {_cache_dir()} "
            "with `python -c \"from lensbench.datasets import registry; "
            f"registry.fetch('{name}')\"` (from {entry['url']})")


def fetch(name: str) -> Path:
    """Local path of the registered file ``name``, its sha256 verified.

    With ``$LENSBENCH_DATA_DIR`` set, the file must be in that mirror (nothing is downloaded);
    otherwise pooch downloads it from its origin into the cache. Raises :class:`DataFileError`
    naming the file, the expected sha256 and where it looked."""
    entry = _entry(name)
    expected = entry["sha256"]
    mirror = data_dir()
    if mirror is not None:
        path = mirror / name
        if not path.is_file():
            raise DataFileError(f"data file {name!r} (sha256 {expected}) not found in the "
                                f"mirror {mirror} (${DATA_DIR_ENV}); looked for {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise DataFileError(f"data file {name!r} in the mirror {mirror} (${DATA_DIR_ENV}) "
                                f"is corrupt: expected sha256 {expected}, file {path} has "
                                f"{actual}")
        return path
    return _download(name, entry)


def _download(name: str, entry: dict) -> Path:
    if entry["url"] is None:
        raise DataFileError(f"data file {name!r} (sha256 {entry['sha256']}) has no public "
                            f"origin ({entry['origin']}); set ${DATA_DIR_ENV} to a mirror that "
                            "holds it")
    if not downloads_allowed():
        return _cached_without_download(name, entry)
    import pooch

    cache_dir = _cache_dir()
    try:
        path = pooch.retrieve(entry["url"], known_hash=f"sha256:{entry['sha256']}",
                              fname=name.replace("/", "__"), path=cache_dir, progressbar=False)
    except ValueError as e:  # pooch: hash mismatch of the download
        raise DataFileError(f"data file {name!r}: download from {entry['url']} does not match "
                            f"the expected sha256 {entry['sha256']} (cache {cache_dir}): "
                            f"{e}") from e
    except Exception as e:  # network errors of any kind
        raise DataFileError(f"data file {name!r} (sha256 {entry['sha256']}) could not be "
                            f"downloaded from {entry['url']} into {cache_dir}: {e}; set "
                            f"${DATA_DIR_ENV} to a local mirror") from e
    return Path(path)


def _cached_without_download(name: str, entry: dict) -> Path:
    path = _cache_path(name)
    if not path.is_file():
        raise DataFileError(f"data file {name!r} (sha256 {entry['sha256']}) is not in the cache "
                            f"{path.parent} and downloads are off (${NO_DOWNLOAD_ENV}); "
                            f"{how_to_get(name)}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise DataFileError(f"data file {name!r} in the cache is corrupt: expected sha256 "
                            f"{entry['sha256']}, file {path} has {actual}; downloads are off "
                            f"(${NO_DOWNLOAD_ENV}), so it is not replaced")
    return path


def fetch_many(names_: list[str]) -> dict[str, Path]:
    """``{name: path}`` for several files (each verified)."""
    return {name: fetch(name) for name in names_}


def file_hashes(names_: list[str]) -> dict[str, str]:
    """``{name: sha256}`` from the registry: what a split's manifest records as ``data_files``."""
    return {name: _entry(name)["sha256"] for name in names_}
