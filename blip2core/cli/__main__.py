from blip2core.cli.main import main

main()
