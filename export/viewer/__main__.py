"""``python -m export.viewer``: write (and optionally serve) the web viewer of an exported student."""

from export.viewer.page import main
from pipeline.config import check_command_line

if __name__ == "__main__":
    check_command_line("viewer")
    main()
