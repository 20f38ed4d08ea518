"""bench/experiments/adapt.py keeps a source's runs (direct transfer, the labelled fine-tunes) in its
--work folder: another source there would be scored by the first one's, so it is refused."""
import pytest

from bench.experiments import adapt


def test_another_source_in_the_same_work_folder_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "source").write_text(str(tmp_path / "first_run") + "\n")
    with pytest.raises(SystemExit) as stopped:
        adapt.main(["--source", str(tmp_path / "second_run"), "--target_data", str(tmp_path / "raw"),
                    "--work", str(work)])
    message = str(stopped.value.code)
    assert message.startswith("error: --work") and "first_run" in message and "give another --work" in message
    assert sorted(p.name for p in work.iterdir()) == ["source"]  # nothing prepared, nothing overwritten
