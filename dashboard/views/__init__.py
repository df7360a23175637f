"""Dashboard pages: Streamlit scripts that app.py runs through st.navigation.

A package so that they ship with the wheel and the import-linter contract covers them.
"""
