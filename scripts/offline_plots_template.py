"""Write the offline HTML template for `dvc plots show` (DVC's own page loads a CDN).

DVC's default plots page loads Vega, Vega-Lite and vega-embed from a CDN, so it is blank
on a machine without network. vl-convert-python (pinned in requirements.txt) bundles those
libraries; this script inlines the bundle into a template that DVC fills in ({plot_divs};
no {scripts} placeholder, so DVC's CDN tags are never inserted).

The template is committed, .dvc/plots_template.html (~0.9 MB of minified JavaScript), and
the committed .dvc/config names it (`plots.html_template`; DVC resolves a relative path
against .dvc/), so a fresh clone renders offline with no step to remember.
tests/test_plots.py checks that the committed file is what this script writes with the
pinned vl-convert-python; after upgrading that package, regenerate and commit:

    python scripts/offline_plots_template.py           # rewrites .dvc/plots_template.html
    python scripts/offline_plots_template.py --check   # exit 1 if the committed file differs
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

NAME = "plots_template.html"  # beside .dvc/config, which names it

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot (offline)</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def build() -> str:
    import vl_convert

    bundle = vl_convert.javascript_bundle()  # assigns window.vegaEmbed / vega / vegaLite
    bundle = bundle.replace("</script", "<\\/script")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in bundle:  # DVC substitutes these by plain string replacement
            raise RuntimeError(f"the JavaScript bundle contains DVC's placeholder {placeholder}")
    return TEMPLATE.format(bundle=bundle)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dvc-dir", default=".dvc", help="the repository's .dvc folder")
    ap.add_argument("--name", default=NAME,
                    help="path of the template relative to --dvc-dir (what .dvc/config names)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the file differs from what would be written")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.dvc_dir):
        print(f"{args.dvc_dir} not found: run from the repository root after `dvc init`",
              file=sys.stderr)
        return 1
    path = os.path.join(args.dvc_dir, args.name)
    text = build()
    if args.check:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            print(f"{path} is missing or stale: run python scripts/offline_plots_template.py "
                  "and commit it", file=sys.stderr)
        return 0 if same else 1
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    if args.name != NAME:
        print(f"now run:  dvc config plots.html_template {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
