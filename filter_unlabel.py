"""The published name of the filter: runs filter_unlabel_data.py with the same flags.

Old scripts call `python filter_unlabel.py --only_get_stats=1 ...`, as the
published local_scripts/*/filter_unlabel.sh did; this alias keeps them
working. Everything (flags, files, messages, exit status) is that of
filter_unlabel_data.py; see its documentation.
"""

from absl import app, flags

import filter_unlabel_data

# --help lists the flags of the main module: make them this script's too.
flags.adopt_module_key_flags(filter_unlabel_data)

if __name__ == "__main__":
    app.run(filter_unlabel_data.main)
