"""The ``ray`` compute target: a run's nodes on a Ray cluster, one container per node.

Needs Ray (``pip install 'celltrain[ray]'``); ``target.RayTarget`` is the target, ``agent`` runs
on the nodes, ``cluster`` talks to Ray, ``transfer`` carries files both ways.
"""
