"""What every `jepa` command that computes a summary does with it."""
import json
import sys


def print_summary(prog: str, work, errors: tuple[type[Exception], ...]) -> int:
    """Run work() -> dict and print it as JSON (exit status 0); an error of the `errors` kinds, which name what
    is wrong with the input, is printed as `prog: message` on stderr instead (exit status 1)."""
    try:
        summary = work()
    except errors as exc:
        print(f'{prog}: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0
