"""``python -m cka_probe``: the ``cka-probe`` command (also what ``torchrun -m cka_probe train ...`` runs)."""

from .cli.main import main

if __name__ == "__main__":
    main(prog_name="cka-probe")
