from l3edge.cli import main

main()
