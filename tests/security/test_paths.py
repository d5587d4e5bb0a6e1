"""The one path helper: traversal, absolute, NUL, over-long, too deep, symlinks and Windows-style names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodegraph import config as config_module
from nodegraph.paths import (MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_PATH_BYTES, InvalidPathError, UnsafePathError,
                             check_component, is_inside, safe_join)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "ok.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    return folder


def test_plain_names_and_subfolders_resolve_inside(root):
    assert safe_join(root, "sub", "ok.png") == (root / "sub" / "ok.png").resolve()
    assert safe_join(root, "sub/ok.png") == safe_join(root, "./sub//ok.png") == safe_join(root, "", "sub/ok.png")
    assert safe_join(root) == root.resolve() and safe_join(root, "") == root.resolve()
    assert safe_join(root, "new folder", "ünïcødé ñame.png").parent.name == "new folder"
    assert safe_join(root, "a" * MAX_COMPONENT_BYTES).name == "a" * MAX_COMPONENT_BYTES
    assert safe_join(root, *["d"] * MAX_DEPTH, "f.png").name == "f.png"
    assert config_module.safe_join is safe_join and config_module.UnsafePathError is UnsafePathError


@pytest.mark.parametrize("parts", [("..",), ("../secret.txt",), ("sub", "../../secret.txt"), ("sub/../ok.png",),
                                   ("..", "root", "sub"), ("sub", ".."), ("a/b/../../..",)])
def test_traversal_is_refused(root, parts):
    with pytest.raises(UnsafePathError, match=r"\.\."):
        safe_join(root, *parts)


@pytest.mark.parametrize("part", ["/etc/passwd", "//etc/passwd", "\\\\server\\share\\x", "\\windows\\win.ini",
                                  "C:\\Windows\\win.ini", "c:/windows", "C:relative.txt", "Z:"])
def test_absolute_posix_and_windows_paths_are_refused(root, part):
    with pytest.raises(UnsafePathError) as info:
        safe_join(root, part)
    assert type(info.value) is UnsafePathError and ("absolute" in str(info.value) or "drive" in str(info.value))


@pytest.mark.parametrize("part", ["..\\secret.txt", "sub\\ok.png", "a\\b"])
def test_windows_separators_are_refused(root, part):
    with pytest.raises(UnsafePathError, match="Windows separator|separator"):
        safe_join(root, part)
    with pytest.raises(UnsafePathError, match="separator"):
        check_component(part)


@pytest.mark.parametrize("part", ["ok\0.png", "\0", "sub/\0/x", "a\nb.png", "bell\x07", "del\x7f"])
def test_nul_and_control_characters_are_malformed(root, part):
    with pytest.raises(InvalidPathError, match="NUL|control"):
        safe_join(root, part)


def test_over_long_and_too_deep_paths_are_malformed(root):
    with pytest.raises(InvalidPathError, match=f"{MAX_COMPONENT_BYTES} bytes"):
        safe_join(root, "a" * 300 + ".png")
    with pytest.raises(InvalidPathError, match="bytes"):
        safe_join(root, "é" * 128)  # 256 bytes in UTF-8, though 128 characters
    with pytest.raises(InvalidPathError, match=f"{MAX_PATH_BYTES} bytes"):
        safe_join(root, "/".join(["b" * 200] * 6))
    with pytest.raises(InvalidPathError, match=f"limit is {MAX_DEPTH}"):
        safe_join(root, "/".join(["d"] * 500), "x.png")
    with pytest.raises(InvalidPathError, match="Unicode"):
        safe_join(root, "lone\ud800surrogate.png")
    with pytest.raises(InvalidPathError, match="text"):
        safe_join(root, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["CON", "nul", "aux.png", "COM1.txt", "lpt9", "NUL .json", "conin$"])
def test_windows_reserved_names_are_malformed(root, name):
    with pytest.raises(InvalidPathError, match="reserved"):
        safe_join(root, "sub", name)
    assert safe_join(root, "console.png").name == "console.png"


def test_symlinks_leading_outside_are_refused_and_inside_ones_allowed(root, tmp_path):
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "escape")
    os.symlink(root / "sub", root / "alias")
    for parts in (("link.txt",), ("escape", "secret.txt"), ("escape",)):
        with pytest.raises(UnsafePathError, match="outside"):
            safe_join(root, *parts)
    assert safe_join(root, "alias", "ok.png") == (root / "sub" / "ok.png").resolve()
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")
    with pytest.raises(UnsafePathError, match="cannot be resolved|outside"):
        safe_join(root, "loop-a", "x.png")
    assert is_inside(root, root / "alias" / "ok.png") and not is_inside(root, root / "link.txt")


def test_errors_carry_the_http_status_and_are_value_errors(root):
    with pytest.raises(ValueError):
        safe_join(root, "../x")
    assert UnsafePathError.http_status == 403 and InvalidPathError.http_status == 400
    assert issubclass(InvalidPathError, UnsafePathError)
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(UnsafePathError):
            check_component(bad)
