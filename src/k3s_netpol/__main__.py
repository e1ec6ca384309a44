from k3s_netpol.cli import main

main()
