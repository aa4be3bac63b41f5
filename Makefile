# Two commands set everything up on a fresh machine and are safe to repeat:
#   make demo   runs the example notebook end to end in a real container
#   make test   runs the test suite
# Each installs what is missing first: the .venv, the Docker engine (where it can), base images.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The kernel's torch; the offline base image installs the same versions.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv docker images extension browser demo test bench clean-containers

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,onnx,lab,ray]' jupyterlab nbclient nbconvert ipykernel
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

# The JupyterLab sidebar, prebuilt into the package (pip users never build it); in the venv the
# lab extension is a link to the build and the server extension's config file is copied.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

magics/celltrain/labextension/package.json: node_modules/.installed $(VENV)/.installed \
		extension/tsconfig.json $(wildcard extension/src/*.ts extension/style/*)
	PATH="$(abspath $(VENV))/bin:$$PATH" npm run build

extension: magics/celltrain/labextension/package.json
	mkdir -p $(VENV)/share/jupyter/labextensions $(VENV)/etc/jupyter/jupyter_server_config.d
	rm -rf $(VENV)/share/jupyter/labextensions/celltrain
	ln -s "$(abspath magics/celltrain/labextension)" $(VENV)/share/jupyter/labextensions/celltrain
	cp jupyter-config/jupyter_server_config.d/celltrain.json $(VENV)/etc/jupyter/jupyter_server_config.d/

# The Docker engine: installed with apt and started as root where none answers.
docker:
	@bash .ci/ensure-docker

# Debian's Chromium, for the browser tests (Playwright drives the system browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "Chromium is missing: apt-get install chromium (the browser tests need it)"

# The offline base image (Debian packages + the kernel's torch), cached by content hash.
images: venv docker
	$(VENV)/bin/celltrain base-image

demo: images extension
	$(PY) -m celltrain.demo

test: images extension browser
	$(VENV)/bin/pytest -q

bench: images
	$(PY) bench/run_all.py

clean-containers:
	-docker ps -aq --filter label=celltrain.run | xargs -r docker rm -f
