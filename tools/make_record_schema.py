"""Write docs/face-record.schema.json from facegender.infer.record_model.FaceRecord (the one source).

    python tools/make_record_schema.py

tests/test_records.py fails when the file and the class disagree.
"""

from pathlib import Path

from facegender.infer.record_model import schema_text

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "face-record.schema.json"
    out.write_text(schema_text())
    print(f"wrote {out}")
