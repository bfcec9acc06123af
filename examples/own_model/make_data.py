"""Write the example data folder: PNGs + metadata.csv (file_name,text,label,split).

    python -m examples.own_model.make_data mydata
"""
import sys

from examples.own_model.model import make_folder

if __name__ == "__main__":
    print(f"wrote {make_folder(sys.argv[1] if len(sys.argv) > 1 else 'mydata', n=300)}")
