"""Run many command lines in one process, each as run_cifar10.py would run
it in a process of its own: from its folder, with its stdout and stderr
(file descriptors 1 and 2, so C code's output too) captured, warnings shown
as in a fresh process, an uncaught exception printed as the interpreter
would. Importing Theano takes about a second a process; this pays it once.

    python tests/cli_many.py JOBS.json RESULTS.json
JOBS: [[folder, [arg, ...]], ...]; RESULTS: [[exit code, stderr], ...].
"""
import json
import os
import sys
import tempfile
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
import gcm_lasagne  # noqa: E402,F401  (configures Theano first)
from gcm_lasagne.cli import main  # noqa: E402


def run(folder, argv):
    os.chdir(folder)
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, 'w') as out, tempfile.TemporaryFile('w+') as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            with warnings.catch_warnings():  # forgets warnings already shown
                code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        err.seek(0)
        text = err.read()
    if isinstance(code, str):  # sys.exit('message') prints it
        code, text = 1, text + code + '\n'
    return [code or 0, text]


if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    results = [run(folder, argv) for folder, argv in jobs]
    with open(sys.argv[2], 'w') as f:
        json.dump(results, f)
