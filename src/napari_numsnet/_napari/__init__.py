"""The napari plugin: reader, writer, sample data and the NUMSnet panel.

The only part of the package that imports napari or a Qt binding; everything it does is
a call into the core (``napari_numsnet.pipeline``, ``workspace``, ``pseudolabel``).
"""
