"""k3s-netpol: visible NetworkPolicy enforcement for K3s."""

__version__ = "0.1.0"
