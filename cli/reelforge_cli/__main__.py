from reelforge_cli.main import app

app(prog_name="reelforge")
