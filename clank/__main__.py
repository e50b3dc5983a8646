from clank.cli import main

main()
