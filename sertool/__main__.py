"""python -m sertool"""

from sertool.cli import main

if __name__ == "__main__":
    main()
