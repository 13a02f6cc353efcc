from pixsift.cli import main

main()
