"""The C decoder of rows and change events, the C writer of rows, the C formatter of COPY
text, the C writer of Kafka records and the C decoder of pgoutput row changes, compiled when
a C compiler is present: without one (``optional``) the install goes on and the pure-Python
paths (and psycopg's own COPY formatting) are used."""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # a build without Cython (not from pyproject's build requirements)
    extensions = []
else:
    extensions = cythonize(
        [Extension("journal.codec._fastread", ["journal/codec/_fastread.pyx"]),
         Extension("journal.codec._fastwrite", ["journal/codec/_fastwrite.pyx"]),
         Extension("journal.codec._copytext", ["journal/codec/_copytext.pyx"]),
         Extension("journal.transport._records", ["journal/transport/_records.pyx"]),
         Extension("producers._pgoutput", ["producers/_pgoutput.pyx"])],
        language_level=3,
    )
    for extension in extensions:  # cythonize's copies drop the flag: set it on them
        extension.optional = True

setup(ext_modules=extensions)
