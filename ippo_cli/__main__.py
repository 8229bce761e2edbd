from ippo_cli.cli import main

main()
