"""Publish a trained model folder to the Hugging Face Hub.

    python scripts/publish.py runs/ems-default --repo_id you/ems-small --dry_run   # list what would be uploaded
    python scripts/publish.py runs/ems-default --repo_id you/ems-small             # upload (needs a token)
"""

import argparse

from trainers.hub import files_to_publish, publish


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--repo_id", required=True)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="Only print the files that would be uploaded.")
    args = parser.parse_args()
    files = files_to_publish(args.folder)
    print(f"{'Would upload' if args.dry_run else 'Uploading'} {len(files)} files to {args.repo_id}:")
    print("\n".join(f"  {name}" for name in files))
    if not args.dry_run:
        print(publish(args.folder, args.repo_id, private=args.private))


if __name__ == "__main__":
    main()
