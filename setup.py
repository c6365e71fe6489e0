"""The C decoder of rows and change events, the C writer of rows and the C formatter of
COPY text, compiled when a C compiler is present: without one (``optional``) the install
goes on and the pure-Python codec (and psycopg's own COPY formatting) is used."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython (not from pyproject's build requirements)
    extensions = []
else:
    extensions = cythonize(
        [Extension("journal.codec._fastread", ["journal/codec/_fastread.pyx"]),
         Extension("journal.codec._fastwrite", ["journal/codec/_fastwrite.pyx"]),
         Extension("journal.codec._copytext", ["journal/codec/_copytext.pyx"])],
        language_level=3,
    )
    for extension in extensions:  # cythonize's copies drop the flag: set it on them
        extension.optional = True

setup(ext_modules=extensions)
