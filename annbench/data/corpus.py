"""Real labelled text corpora available with no network beyond the package registries."""

from __future__ import annotations

import subprocess
from pathlib import Path

from annbench.errors import AnnbenchError

APT_LISTS = Path("/var/lib/apt/lists")


def debian_package_descriptions(lists_dir: Path = APT_LISTS) -> list[tuple[str, str, str]]:
    """``(package, section, description)`` of every package in the apt lists, sorted by name.

    Needs Debian's package lists with English translations, fetched by
    ``apt-get update -o Acquire::Languages=en``. The description is the one-line summary
    followed by the first paragraph of the long description.
    """
    packages = sorted(lists_dir.glob("*_Packages*"))
    translations = sorted(lists_dir.glob("*_i18n_Translation-en*"))
    if not packages or not translations:
        raise AnnbenchError(
            f"No Debian package lists with translations in {lists_dir}; run "
            "'apt-get update -o Acquire::Languages=en' first"
        )
    sections: dict[str, str] = {}
    for path in packages:
        for stanza in _stanzas(path):
            name, section = stanza.get("Package"), stanza.get("Section")
            if name and section:
                sections.setdefault(name, section.split("/")[-1])
    descriptions: dict[str, str] = {}
    for path in translations:
        for stanza in _stanzas(path):
            name, text = stanza.get("Package"), stanza.get("Description-en")
            if name in sections and text and name not in descriptions:
                descriptions[name] = _first_paragraph(text)
    return [(name, sections[name], descriptions[name]) for name in sorted(descriptions)]


def _stanzas(path: Path) -> list[dict[str, str]]:
    text = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def _first_paragraph(description: str) -> str:
    summary, _, body = description.partition("\n")
    paragraph = body.split("\n.\n")[0].replace("\n", " ")
    return " ".join(f"{summary}. {paragraph}".split())


def debian_installed_sizes(
    lists_dir: Path = APT_LISTS, release: str = "bookworm"
) -> dict[str, int]:
    """``{package: Installed-Size in KiB}`` from apt's package lists: the ``release`` main
    list first, then its other suites (security, updates) for packages it lacks."""
    packages = sorted(lists_dir.glob("*_Packages*"))
    main = [p for p in packages if f"_dists_{release}_main_" in p.name]
    if not main:
        raise AnnbenchError(f"No {release} main package list in {lists_dir}; run 'apt-get update'")
    sizes: dict[str, int] = {}
    for path in main + [p for p in packages if p not in main]:
        for stanza in _stanzas(path):
            name, size = stanza.get("Package"), stanza.get("Installed-Size")
            if name and size and size.isdigit():
                sizes.setdefault(name, int(size))
    return sizes
