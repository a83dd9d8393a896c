"""tagger-app names the system libraries Qt's X11 plugin lacks instead of letting Qt abort."""

from tagger_app import app, platform_check
from tagger_app.platform_check import debian_package, not_found, uses_xcb

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f25)
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-icccm.so.4 => not found
"""


def test_missing_libraries_and_their_packages():
    assert not_found(LDD) == ["libxcb-icccm.so.4", "libxkbcommon-x11.so.0"]
    assert [debian_package(lib) for lib in ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0", "libEGL.so.1",
                                            "libdbus-1.so.3")] == \
        ["libxcb-cursor0", "libxkbcommon-x11-0", "libegl1", "libdbus-1-3"]


def test_only_an_x11_session_on_linux_needs_them():
    assert uses_xcb({}, "linux")
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not uses_xcb({}, "darwin")


def test_the_app_says_what_to_install_instead_of_aborting(monkeypatch, capsys):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(platform_check.sys, "platform", "linux")
    monkeypatch.setattr(platform_check, "missing_xcb_libraries", lambda: ["libxcb-cursor.so.0"])
    assert app.main([]) == 1
    assert "sudo apt install libxcb-cursor0" in capsys.readouterr().err
