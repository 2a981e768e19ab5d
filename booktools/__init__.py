"""The book's build tooling: what builds, executes, checks and publishes the pages, as
opposed to ``d2lcore``, what the pages import. Imported as a package from the
repository's root (Sphinx finds the extensions through ``_config.yml``'s
``local_extensions``; the command-line tools run as ``python -m booktools.NAME``).

Sphinx extensions (``_config.yml``)
    ``offline_assets``  plotly.js, MathJax and the page scripts served from the site
    ``exec_cache``      the execution cache's fingerprint (d2lcore, pins, profile, device)
    ``parallel_exec``   the pages that need it executed several at a time
    ``colab``           the "Colab" launch button
    ``live_code``       Live Code on the served Thebe 0.9 (with ``live_code.js``)

Shared pieces
    ``toc``         the one reader of ``_toc.yml``: the pages, in order
    ``exec_order``  the longest pages first (``exec_times.json``) and the cores per page
    ``notebooks``   the one notebook runner (nbclient): the parallel execution, the Binder
                    and Colab rehearsals; the GPU check runs pages as scripts (no Jupyter
                    on a bare GPU machine)

Command-line tools (``python -m booktools.NAME --help``)
    ``exec_report``      execution time per page of the last build
    ``colab_notebooks``  the chapters as Colab notebooks
    ``gpu_check``        every page as a script and the benchmarks, on a bare GPU machine
                         (``gpu_wheels.txt``: what it carries there)
    ``gpu_book``         the book built with Jupyter Book on a bare GPU machine, with its
                         execution report (``gpu_book_wheels.txt``: what it adds)
    ``gpu_wheels``       the wheels both carry, pinned and slimmed (``make gpu-wheels``)
    ``repo2docker_lock`` the environment Binder's image starts from
    ``binder_requirements`` binder/requirements.txt from the lock
    ``test_build``       the book built for the tests, into ``_build/test``
"""
