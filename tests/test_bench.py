"""trackscribe bench: every approach measured in one run, with ratios to the pipeline."""

import json
import subprocess
import sys


def test_bench_reports_each_approach_with_ratios_to_the_pipeline(sample_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "bench",
            str(sample_dir / "manifest.json"),
            "--approaches",
            "pipeline,mix,oracle",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report) == ["mix", "oracle", "pipeline"]
    for entry in report.values():
        assert entry["wall_s"] > 0 and entry["realtime_factor"] > 0 and entry["peak_rss_mb"] > 50
    pipeline = report["pipeline"]
    assert pipeline["ratios"]["wall_s"] == 1.0
    assert pipeline["cpwer"] < 15 and report["oracle"]["cpwer"] is not None
    assert report["mix"]["cpwer"] is None and report["mix"]["orcwer"] is not None
    assert report["pipeline"]["evaluation"]["silent_track_words"] == 0
    stages = pipeline["details"]["stages_s"]
    assert stages["transcribe (model)"] > 0 and stages["decode (sum over tracks)"] > 0
    assert 0 < pipeline["details"]["speech_share"] < 0.6  # only speech reached the model
