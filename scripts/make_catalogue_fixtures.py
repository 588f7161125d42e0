"""Writes the parquet fixtures of crates/phi3v-data/tests/catalogue.rs.

Regenerate (from the repository root):

    ~/venv/bin/pip install pyarrow pillow
    ~/venv/bin/python scripts/make_catalogue_fixtures.py

Files, under crates/phi3v-data/tests/data/catalogue/:

- hf_images.parquet: a catalogue as Hugging Face `datasets` exports one whose image column
  is an `Image` feature: the column `image` is a struct<bytes: binary, path: string>, and the
  schema carries the `huggingface` metadata. zstd-compressed. Rows:
    0: embedded PNG (6x4), path "red.png"
    1: embedded JPEG (8x8), path "blue.jpg"
    2: no bytes, path "local.png" -> the file next to the parquet file (5x5)
    3: embedded bytes that are not an image -> dropped as undecodable
    4: null image -> dropped as missing image
- local.png: the image of row 2.
- typed.parquet: the Burberry columns with other arrow types than the published file, to
  check the readers' conversions: competence_date date32, category3_code
  dictionary<int32, string>, product_code int32, title large_string, full_price
  decimal128(10, 2), price float32, flg_discount bool. imageurl holds relative paths to
  local.png. Three rows.
"""

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "crates/phi3v-data/tests/data/catalogue"


def encoded(size, colour, fmt):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def hf_images():
    images = [
        {"bytes": encoded((6, 4), (200, 20, 20), "PNG"), "path": "red.png"},
        {"bytes": encoded((8, 8), (20, 20, 200), "JPEG"), "path": "blue.jpg"},
        {"bytes": None, "path": "local.png"},
        {"bytes": b"\x89PNG\r\n\x1a\nthis is not a png", "path": "broken.png"},
        None,
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "product_code": pa.array([101, 102, 103, 104, 105], pa.int64()),
            "title": ["Red Thing", "Blue Thing", "Local Thing", "Broken Thing", "No Image"],
            "category3_code": ["Bags", "Scarves", "Shoes", "Coats", "Shirts"],
            "full_price": [100.0, 200.5, 300.0, 400.0, 500.0],
            "image": pa.array(images, image_type),
        }
    )
    features = {
        "product_code": {"dtype": "int64", "_type": "Value"},
        "title": {"dtype": "string", "_type": "Value"},
        "category3_code": {"dtype": "string", "_type": "Value"},
        "full_price": {"dtype": "float64", "_type": "Value"},
        "image": {"_type": "Image"},
    }
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})}
    )
    pq.write_table(table, OUT / "hf_images.parquet", compression="zstd")


def typed():
    import datetime
    from decimal import Decimal

    table = pa.table(
        {
            "website_name": ["BURBERRY"] * 3,
            "competence_date": pa.array([datetime.date(2023, 11, 17)] * 3, pa.date32()),
            "category3_code": pa.array(["Bags", "Coats", "Bags"]).dictionary_encode(),
            "product_code": pa.array([7, 8, 9], pa.int32()),
            "title": pa.array(["A Bag", "A Coat", "Another Bag"], pa.large_string()),
            "imageurl": ["local.png", "./local.png", "local.png"],
            "full_price": pa.array(
                [Decimal("1234.50"), Decimal("99.99"), None], pa.decimal128(10, 2)
            ),
            "price": pa.array([1000.25, 99.99, 5.0], pa.float32()),
            "flg_discount": pa.array([True, False, False], pa.bool_()),
        }
    )
    pq.write_table(table, OUT / "typed.parquet")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 5), (20, 200, 20)).save(OUT / "local.png")
    hf_images()
    typed()
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(OUT.parents[4]), p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
