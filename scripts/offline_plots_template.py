"""Write an offline HTML template for `dvc plots show` (its default page loads a CDN).

DVC's default plots page loads Vega, Vega-Lite and vega-embed from a CDN, so it is blank
on a machine without network. vl-convert-python bundles those libraries; this script
inlines the bundle into a template that DVC fills in ({plot_divs}; no {scripts}
placeholder, so DVC's CDN tags are never inserted), and prints the one-time config command.

    python scripts/offline_plots_template.py            # writes .dvc/tmp/offline_plots_template.html
    dvc config --local plots.html_template tmp/offline_plots_template.html

The file is ~0.9 MB of minified JavaScript, generated rather than committed; .dvc/tmp is
ignored by DVC's own .dvc/.gitignore. DVC resolves a relative html_template against .dvc/.
Rerun after a fresh clone (or after deleting .dvc/tmp).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

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
    ap.add_argument("--name", default=os.path.join("tmp", "offline_plots_template.html"),
                    help="path of the template relative to --dvc-dir")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.dvc_dir):
        print(f"{args.dvc_dir} not found: run from the repository root after `dvc init`",
              file=sys.stderr)
        return 1
    path = os.path.join(args.dvc_dir, args.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(build())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    print(f"now run:  dvc config --local plots.html_template {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
