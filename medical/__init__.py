"""diffsci.medical: CT and MRI reconstruction on MONAI. Not built yet."""
