"""Audio given after a command's options (``zeroshot MODEL --labels x a.wav``, ``… -- -name.wav``) still reaches
the command; an unknown flag is still a usage error (exit 2)."""

from __future__ import annotations

import pytest

from kikimimi.cli import _more_positionals, build_parser


def _parse(argv: list[str]):
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    return _more_positionals(parser, args, extras) if extras else args


def test_audio_after_the_options_and_after_a_double_dash_join_the_inputs():
    assert _parse(["zeroshot", "m.pth", "--labels", "a,b", "x.wav", "y.wav"]).inputs == ["m.pth", "x.wav", "y.wav"]
    args = _parse(["zeroshot", "m.pth", "--labels", "a,b", "--json", "--", "-x.wav", "a b.wav"])
    assert args.inputs == ["m.pth", "-x.wav", "a b.wav"] and args.json


def test_an_unknown_flag_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(["zeroshot", "m.pth", "--labels", "a,b", "--no-such-flag", "x.wav"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without a list to extend keeps argparse's rule
        _parse(["info", "--json", "x.wav", "extra", "--bogus"])


def test_an_unknown_flag_shows_the_sub_commands_usage(capsys):
    from kikimimi.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["search", "some-index", "a drum hit", "-k", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: kikimimi search ") and "--top TOP" in err
    assert "kikimimi search: error: unrecognized arguments: -k 3" in err
