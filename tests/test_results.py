"""The committed results are what the committed logs say: the README's command, run again on
logs/seeds and logs/ablations, writes the same submission.json and the same table the README shows."""
import json
import re
import shlex
import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import make_submission as ms  # noqa: E402

README = (REPO_ROOT / "README.md").read_text()
TABLE = re.compile(r"<!-- results-table:[^\n]*-->\n(.*?)<!-- end of results-table -->\n", re.S)
COMMAND = re.compile(r"```bash\n(python tools/make_submission.py \\\n.*?--table logs/seeds/results.md.*?)\n```", re.S)


def readme_command() -> list[str]:
    found = COMMAND.findall(README)
    assert len(found) == 1, "the README should hold one results command"
    argv = shlex.split(found[0].replace("\\\n", " "))
    assert argv[:2] == ["python", "tools/make_submission.py"]
    return argv[2:]


def redirected(argv: list[str], tmp_path) -> list[str]:
    """The README's arguments with every output sent to tmp_path and the plot left out."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--plot":
            skip = True
            continue
        if i and argv[i - 1] in ("--output", "--table"):
            a = str(tmp_path / ("submission.json" if argv[i - 1] == "--output" else "results.md"))
        elif a.startswith("logs/"):
            a = str(REPO_ROOT / a)
        out.append(a)
    return out


def test_readme_command_reproduces_submission_and_table(tmp_path, capsys):
    argv = readme_command()
    assert ms.main(redirected(argv, tmp_path)) == 0, capsys.readouterr().err
    made = json.loads((tmp_path / "submission.json").read_text())
    committed = json.loads((REPO_ROOT / "submission.json").read_text())
    for sub in (made, committed):  # paths as given: absolute here, relative in the committed file
        for seed in sub["seeds"]:
            for key in ("log", "eval_log"):
                if key in seed:
                    seed[key] = seed[key].rsplit("logs/", 1)[-1]
    assert made == committed
    table = (tmp_path / "results.md").read_text().replace(str(REPO_ROOT) + "/", "")
    assert table == (REPO_ROOT / "logs" / "seeds" / "results.md").read_text()
    assert TABLE.findall(README) == [table]


def test_committed_results_are_three_valid_seeds():
    sub = json.loads((REPO_ROOT / "submission.json").read_text())
    assert sub["n_seeds"] == 3 and sorted(s["seed"] for s in sub["seeds"]) == [42, 1337, 2024]
    assert sub["bytes_total"] <= ms.SIZE_LIMIT_BYTES
    assert all(s["ngram_audit"]["max_abs_err"] <= ms.AUDIT_TOLERANCE for s in sub["seeds"])
    assert all(s["eval_stack"] == dict(ngram=True, ttt=True) for s in sub["seeds"])
    assert len({s["bytes_code"] for s in sub["seeds"]}) == 1
    assert f"{sub['val_bpb']:.5f} ± {sub['val_bpb_std']:.5f}" in README
