"""The engine on Ray Serve (`launch.py --ray [ADDRESS]`, `[ray]` in the config): each replica is one device with
its own LocalEngine and model cache (replica.py); this process stays the one ingress that owns job ids, owners,
fairness, history and outputs, and sends each batch its fair queue picks to a replica (runner.py). deploy.py
starts or joins the cluster. Nothing imports this package (or Ray) unless the server runs with --ray."""
