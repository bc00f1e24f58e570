"""metrics.jsonl on resume: the records up to the checkpoint stay, the rest are kept aside, not lost."""

import json

from kiln.train.metrics import REWOUND, MetricsLog


def test_a_resume_keeps_aside_what_the_steps_it_runs_again_logged(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 5.0 - s}) for s in (1, 2, 3, 4)] + [json.dumps({"note": "no step"})]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')  # killed while writing step 5's line
    log = MetricsLog(path, truncate_after_step=2)
    log.write({"step": 3, "loss": 1.5})
    log.close()
    assert path.read_text().splitlines() == [lines[0], lines[1], lines[4], json.dumps({"step": 3, "loss": 1.5})]
    assert (tmp_path / REWOUND).read_text().splitlines() == [lines[2], lines[3], '{"step": 5, "lo']
    MetricsLog(path, truncate_after_step=1).close()  # a second resume adds to what the first kept aside
    assert len((tmp_path / REWOUND).read_text().splitlines()) == 5
    MetricsLog(path, truncate_after_step=None).close()  # a fresh start begins an empty log
    assert path.read_text() == "" and not (tmp_path / REWOUND).exists()


def test_a_crash_between_keeping_aside_and_rewriting_keeps_each_record_aside_once(tmp_path, monkeypatch):
    import pytest

    import kiln.train.metrics as metrics

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 5.0 - s}) for s in (1, 2, 3)]
    path.write_text("\n".join(lines) + "\n")
    real = metrics.write_whole

    def killed_at_the_rewrite(target, text):
        if target == path:
            raise KeyboardInterrupt  # the process dies after the records were kept aside
        real(target, text)

    monkeypatch.setattr(metrics, "write_whole", killed_at_the_rewrite)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(path, truncate_after_step=1)
    monkeypatch.setattr(metrics, "write_whole", real)
    MetricsLog(path, truncate_after_step=1).close()  # the resume run again
    assert (tmp_path / REWOUND).read_text().splitlines() == lines[1:]
    assert path.read_text().splitlines() == lines[:1]


def test_a_link_at_the_logs_name_is_replaced_never_written_through(tmp_path):
    mine = tmp_path / "thesis.md"
    for truncate in (None, 3):  # a fresh start, and a resume whose log is a dangling link
        mine.write_text("chapter one")
        path = tmp_path / f"metrics_{truncate}.jsonl"
        path.symlink_to(mine if truncate is None else tmp_path / "gone.md")
        log = MetricsLog(path, truncate_after_step=truncate)
        log.write({"step": 4, "loss": 1.0})
        log.close()
        assert mine.read_text() == "chapter one" and not (tmp_path / "gone.md").exists()
        assert not path.is_symlink() and json.loads(path.read_text()) == {"step": 4, "loss": 1.0}


def test_a_record_kiln_did_not_write_is_kept_aside_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": "later"}\n[2]\n\xff\xfe\n{"step": 3}\n')
    MetricsLog(path, truncate_after_step=2).close()
    assert path.read_text().splitlines() == ['{"step": 1}']
    assert len((tmp_path / REWOUND).read_text().splitlines()) == 4
